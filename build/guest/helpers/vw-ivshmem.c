/*
 * vw-ivshmem: the guest side of the ivshmem-doorbell tests. Linux has no ivshmem driver, so this drives the
 * device from user space through vfio-pci (the guest gets a virtual IOMMU): BAR0 registers and BAR2 shared
 * memory through the vfio device fd, and the device's MSI-X vectors as eventfds (VFIO_DEVICE_SET_IRQS), so a
 * doorbell from another peer is a real MSI-X interrupt taken by the guest kernel and handed to us.
 *
 *   vw-ivshmem GROUP BDF info
 *   vw-ivshmem GROUP BDF recv SLOT TIMEOUT_S          publish "ready" with our id in SLOT, wait for an interrupt,
 *                                                     print the message the sender left in SLOT
 *   vw-ivshmem GROUP BDF send SLOT VECTOR TEXT TIMEOUT_S
 *                                                     wait for "ready" in SLOT, leave TEXT there, ring the
 *                                                     receiver's VECTOR through the Doorbell register
 *
 * Mailbox SLOT lives at BAR2 + SLOT * 4096 (little-endian u32s; the host-side tests use the same layout):
 *   +0 ready magic 'REDY'   +4 receiver id   +8 message magic 'MSG!'   +12 text length   +64 text
 * Output lines start with "vw-ivshmem:"; results are key=value pairs for the guest test script.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define REG_IVPOSITION 8
#define REG_DOORBELL 12
#define SLOT_SIZE 4096
#define MB_READY 0
#define MB_ID 4
#define MB_MSG 8
#define MB_LEN 12
#define MB_TEXT 64
#define MAGIC_READY 0x59444552u /* "REDY" */
#define MAGIC_MSG 0x2147534du   /* "MSG!" */
#define MAX_VECTORS 64

static int dev = -1;
static struct vfio_region_info bar0, bar2, cfg;

static void die(const char *what) {
  printf("vw-ivshmem: error=%s errno=%d (%s)\n", what, errno, strerror(errno));
  exit(1);
}

static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void region(int index, struct vfio_region_info *r) {
  memset(r, 0, sizeof(*r));
  r->argsz = sizeof(*r);
  r->index = index;
  if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, r) < 0) die("VFIO_DEVICE_GET_REGION_INFO");
}

static uint32_t rd32(struct vfio_region_info *r, uint64_t off) {
  uint32_t v;
  if (pread(dev, &v, 4, r->offset + off) != 4) die("pread");
  return v;
}

static void wr32(struct vfio_region_info *r, uint64_t off, uint32_t v) {
  if (pwrite(dev, &v, 4, r->offset + off) != 4) die("pwrite");
}

static void open_device(const char *group_num, const char *bdf) {
  char path[64];
  int container = open("/dev/vfio/vfio", O_RDWR);
  if (container < 0) die("open-/dev/vfio/vfio");
  if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) die("vfio-api-version");
  if (!ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU)) die("no-type1-iommu");
  snprintf(path, sizeof(path), "/dev/vfio/%s", group_num);
  int group = open(path, O_RDWR);
  if (group < 0) die("open-group");
  struct vfio_group_status st = {.argsz = sizeof(st)};
  if (ioctl(group, VFIO_GROUP_GET_STATUS, &st) < 0) die("VFIO_GROUP_GET_STATUS");
  if (!(st.flags & VFIO_GROUP_FLAGS_VIABLE)) {
    errno = EBUSY;
    die("group-not-viable");
  }
  if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0) die("VFIO_GROUP_SET_CONTAINER");
  if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) < 0) die("VFIO_SET_IOMMU");
  dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
  if (dev < 0) die("VFIO_GROUP_GET_DEVICE_FD");
  region(VFIO_PCI_BAR0_REGION_INDEX, &bar0);
  region(VFIO_PCI_BAR2_REGION_INDEX, &bar2);
  region(VFIO_PCI_CONFIG_REGION_INDEX, &cfg);
  /* MSI-X messages are memory writes by the device: it must be a bus master */
  uint16_t cmd;
  if (pread(dev, &cmd, 2, cfg.offset + PCI_COMMAND) != 2) die("pread-command");
  cmd |= PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY;
  if (pwrite(dev, &cmd, 2, cfg.offset + PCI_COMMAND) != 2) die("pwrite-command");
}

/* one eventfd per MSI-X vector; returns how many */
static int setup_irqs(int *fds) {
  struct vfio_irq_info info = {.argsz = sizeof(info), .index = VFIO_PCI_MSIX_IRQ_INDEX};
  if (ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, &info) < 0) die("VFIO_DEVICE_GET_IRQ_INFO");
  int n = info.count > MAX_VECTORS ? MAX_VECTORS : (int)info.count;
  if (n == 0) {
    errno = ENODEV;
    die("no-msix-vectors");
  }
  size_t sz = sizeof(struct vfio_irq_set) + sizeof(int32_t) * n;
  struct vfio_irq_set *set = calloc(1, sz);
  set->argsz = sz;
  set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set->index = VFIO_PCI_MSIX_IRQ_INDEX;
  set->start = 0;
  set->count = n;
  for (int i = 0; i < n; i++) {
    fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fds[i] < 0) die("eventfd");
    ((int32_t *)set->data)[i] = fds[i];
  }
  if (ioctl(dev, VFIO_DEVICE_SET_IRQS, set) < 0) die("VFIO_DEVICE_SET_IRQS");
  free(set);
  return n;
}

static uint32_t interrupts_total(void) {
  /* the vfio-msix lines in /proc/interrupts, summed over CPUs: proof the kernel took the interrupt */
  FILE *f = fopen("/proc/interrupts", "r");
  char line[1024];
  uint32_t total = 0;
  if (!f) return 0;
  while (fgets(line, sizeof(line), f)) {
    if (!strstr(line, "vfio-msix")) continue;
    char *p = strchr(line, ':');
    if (!p) continue;
    p++;
    for (;;) {
      char *end;
      unsigned long v = strtoul(p, &end, 10);
      if (end == p) break;
      total += v;
      p = end;
    }
  }
  fclose(f);
  return total;
}

static void wait_u32(uint64_t off, uint32_t want, int timeout_s, const char *what) {
  long long deadline = now_ms() + timeout_s * 1000LL;
  while (rd32(&bar2, off) != want) {
    if (now_ms() > deadline) {
      errno = ETIMEDOUT;
      die(what);
    }
    usleep(2000);
  }
}

static int do_recv(int slot, int timeout_s) {
  int fds[MAX_VECTORS];
  int n = setup_irqs(fds);
  uint32_t id = rd32(&bar0, REG_IVPOSITION);
  uint64_t base = (uint64_t)slot * SLOT_SIZE;
  uint32_t before = interrupts_total();
  wr32(&bar2, base + MB_MSG, 0);
  wr32(&bar2, base + MB_ID, id);
  wr32(&bar2, base + MB_READY, MAGIC_READY);
  printf("vw-ivshmem: ready id=%u vectors=%d slot=%d\n", id, n, slot);
  fflush(stdout);
  struct pollfd pfd[MAX_VECTORS];
  for (int i = 0; i < n; i++) pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
  int r = poll(pfd, n, timeout_s * 1000);
  if (r < 0) die("poll");
  if (r == 0) {
    errno = ETIMEDOUT;
    die("no-interrupt");
  }
  int vector = -1;
  uint64_t count = 0;
  for (int i = 0; i < n; i++) {
    if (pfd[i].revents & POLLIN) {
      if (read(fds[i], &count, 8) != 8) die("read-eventfd");
      vector = i;
      break;
    }
  }
  uint32_t after = interrupts_total();
  uint32_t magic = rd32(&bar2, base + MB_MSG);
  uint32_t len = rd32(&bar2, base + MB_LEN);
  char text[256] = {0};
  if (magic != MAGIC_MSG || len >= sizeof(text)) {
    printf("vw-ivshmem: error=no-message-after-interrupt vector=%d magic=0x%x len=%u\n", vector, magic, len);
    return 1;
  }
  if (pread(dev, text, len, bar2.offset + base + MB_TEXT) != (ssize_t)len) die("pread-text");
  for (char *p = text; *p; p++)
    if (*p == ' ') *p = '_';
  printf("vw-ivshmem: received id=%u vector=%d count=%llu irqs=%u text=%s\n", id, vector, (unsigned long long)count, after - before, text);
  return 0;
}

static int do_send(int slot, int vector, const char *text, int timeout_s) {
  uint64_t base = (uint64_t)slot * SLOT_SIZE;
  uint32_t me = rd32(&bar0, REG_IVPOSITION);
  wait_u32(base + MB_READY, MAGIC_READY, timeout_s, "receiver-not-ready");
  uint32_t peer = rd32(&bar2, base + MB_ID);
  uint32_t len = strlen(text);
  if (len > 200) len = 200;
  if (pwrite(dev, text, len, bar2.offset + base + MB_TEXT) != (ssize_t)len) die("pwrite-text");
  wr32(&bar2, base + MB_LEN, len);
  wr32(&bar2, base + MB_MSG, MAGIC_MSG);
  wr32(&bar0, REG_DOORBELL, (peer << 16) | (uint32_t)vector);
  printf("vw-ivshmem: sent id=%u to=%u vector=%d len=%u\n", me, peer, vector, len);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 4) {
    fprintf(stderr, "usage: %s GROUP BDF info | recv SLOT TIMEOUT_S | send SLOT VECTOR TEXT TIMEOUT_S\n", argv[0]);
    return 2;
  }
  open_device(argv[1], argv[2]);
  const char *cmd = argv[3];
  if (!strcmp(cmd, "info")) {
    printf("vw-ivshmem: id=%u bar0=%llu bar2=%llu\n", rd32(&bar0, REG_IVPOSITION), (unsigned long long)bar0.size, (unsigned long long)bar2.size);
    return 0;
  }
  if (!strcmp(cmd, "recv") && argc == 6) return do_recv(atoi(argv[4]), atoi(argv[5]));
  if (!strcmp(cmd, "send") && argc == 8) return do_send(atoi(argv[4]), atoi(argv[5]), argv[6], atoi(argv[7]));
  fprintf(stderr, "bad arguments\n");
  return 2;
}
