/*
 * SIGBUS guard for guest memory. A front-end can shrink a guest-memory file it handed us (a memfd it did not
 * seal, a file on hugetlbfs or tmpfs); the next access to a page past the new end raises SIGBUS, and Node (V8
 * handles SIGSEGV only) dies of it. This handler, loaded through koffi, covers the faulting 2 MiB block with
 * anonymous memory when the address lies in a range we registered (guest RAM inside a wasm Memory), counts it,
 * and returns: the access is retried and reads zeros, the ring engine's checks do the rest. A SIGBUS anywhere
 * else is left to the default action, as before.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define SLOTS 256
#define BLOCK ((uintptr_t)2 << 20)

static volatile uintptr_t lo[SLOTS], hi[SLOTS];
static volatile uint64_t faults;
static struct sigaction previous;
static int installed;

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)uc;
  uintptr_t a = (uintptr_t)si->si_addr;
  for (int i = 0; i < SLOTS; i++) {
    if (a >= lo[i] && a < hi[i]) {
      uintptr_t block = a & ~(BLOCK - 1);
      if (block < lo[i]) block = lo[i];
      void *r = mmap((void *)block, BLOCK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
      if (r != MAP_FAILED) {
        __atomic_add_fetch(&faults, 1, __ATOMIC_SEQ_CST);
        return;
      }
    }
  }
  /* not ours: the default action, as if we were not here */
  sigaction(SIGBUS, &previous, NULL);
}

int vw_sigbus_install(void) {
  if (installed) return 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGBUS, &sa, &previous) != 0) return -1;
  installed = 1;
  return 0;
}

/* Guard [start, end); returns the slot, or -1 when all are taken. Start and end should be 2 MiB-aligned. */
int vw_sigbus_guard(uint64_t start, uint64_t end) {
  for (int i = 0; i < SLOTS; i++) {
    if (hi[i] == 0) {
      lo[i] = (uintptr_t)start;
      __atomic_store_n(&hi[i], (uintptr_t)end, __ATOMIC_SEQ_CST);
      return i;
    }
  }
  return -1;
}

void vw_sigbus_unguard(int slot) {
  if (slot < 0 || slot >= SLOTS) return;
  __atomic_store_n(&hi[slot], 0, __ATOMIC_SEQ_CST);
  lo[slot] = 0;
}

uint64_t vw_sigbus_faults(void) { return __atomic_load_n(&faults, __ATOMIC_SEQ_CST); }
