// What a write into the page cache costs the kernel: a file written in 4 KiB pwrite()s three
// times, first into pages it does not have yet (the file grows: the database file during a
// checkpoint while the store grows), then over the same pages again (a WAL rewritten from its
// start). Prints the CPU per 4 KiB page of each pass.
//   cc -O2 -o /tmp/page-cache-floor scripts/page-cache-floor.c && taskset -c 0 /tmp/page-cache-floor /tmp/pcf 1024
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s FILE MiB\n", argv[0]); return 2; }
    long mib = atol(argv[2]);
    if (mib <= 0 || mib > 65536) { fprintf(stderr, "MiB: 1 to 65536\n"); return 2; }
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) { perror("open"); return 1; }
    char page[4096];
    memset(page, 7, sizeof page);
    long pages = mib * 256;
    for (int pass = 0; pass < 3; pass++) {
        double start = cpu();
        for (long i = 0; i < pages; i++) {
            if (pwrite(fd, page, sizeof page, (off_t)i * 4096) != (ssize_t)sizeof page) { perror("pwrite"); return 1; }
        }
        printf("pass %d (%s): %.2f us CPU per 4 KiB page\n", pass, pass == 0 ? "new pages" : "pages in the cache", (cpu() - start) * 1e6 / pages);
    }
    close(fd);
    unlink(argv[1]);
    return 0;
}
