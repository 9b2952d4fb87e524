// What one syscall's entry and exit cost on this machine, with no work inside it (getppid):
// the most that batching syscalls (io_uring) can save per syscall it batches.
//   cc -O2 scripts/syscall-floor.c -o /tmp/syscall-floor && taskset -c 0 /tmp/syscall-floor
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(void) {
    enum { N = 5000000 };
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < N; i++) syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.3f us per syscall entry and exit\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / N / 1e3);
    return 0;
}
