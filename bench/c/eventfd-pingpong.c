/* The C baseline for the kick-to-call round trip: two threads bounce an eventfd "kick" and "call", each
 * waiting in poll() as our worker and driver do. Prints one JSON line: samples and percentiles in µs. */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static int kick_fd, call_fd;
static volatile int stop;

static void wait_fd(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  uint64_t v;
  while (poll(&p, 1, 100) <= 0 && !stop) {}
  if (read(fd, &v, 8) != 8) {}
}

static void *device(void *arg) {
  (void)arg;
  uint64_t one = 1;
  while (!stop) {
    wait_fd(kick_fd);
    if (stop) break;
    if (write(call_fd, &one, 8) != 8) {}
  }
  return NULL;
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 2.0;
  size_t cap = 4000000, n = 0;
  double *s = malloc(cap * sizeof *s);
  kick_fd = eventfd(0, EFD_NONBLOCK);
  call_fd = eventfd(0, EFD_NONBLOCK);
  pthread_t t;
  pthread_create(&t, NULL, device, NULL);
  uint64_t one = 1;
  double end = now_us() + seconds * 1e6;
  while (n < cap) {
    double t0 = now_us();
    if (t0 >= end) break;
    if (write(kick_fd, &one, 8) != 8) {}
    wait_fd(call_fd);
    s[n++] = now_us() - t0;
  }
  stop = 1;
  if (write(kick_fd, &one, 8) != 8) {}
  pthread_join(t, NULL);
  qsort(s, n, sizeof *s, cmp);
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum += s[i];
  printf("{\"samples\":%zu,\"p50Us\":%.3f,\"p90Us\":%.3f,\"p99Us\":%.3f,\"meanUs\":%.3f}\n", n, s[n / 2], s[n * 9 / 10],
         s[n * 99 / 100], n ? sum / n : 0);
  return 0;
}
