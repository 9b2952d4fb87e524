// Counts heap allocations per thread for the allocation tests, in the style of swift-nio's
// allocation counters: this test-only library defines malloc, calloc and realloc, which the
// test executable then uses instead of libc's, and forwards them to glibc's own entry points.
// Only the thread that called sb_allocations_start counts, so tests running in parallel on
// other threads do not disturb a measurement.
#include <stddef.h>
#include "CAllocationCounter.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SB_SANITIZED 1
#endif
#endif

#ifdef SB_SANITIZED
// A sanitizer brings its own allocator: replacing malloc under it would hand its free()
// memory it never allocated. Nothing is counted; the allocation test skips itself.
void sb_allocations_start(void) {}
long sb_allocations_stop(void) { return -1; }
int sb_allocations_counted(void) { return 0; }
#else
int sb_allocations_counted(void) { return 1; }

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);

static __thread int counting __attribute__((tls_model("initial-exec")));
static __thread long allocations __attribute__((tls_model("initial-exec")));

void *malloc(size_t size) {
    if (counting) allocations++;
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    if (counting) allocations++;
    return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size) {
    if (counting) allocations++;
    return __libc_realloc(pointer, size);
}

void sb_allocations_start(void) {
    allocations = 0;
    counting = 1;
}

long sb_allocations_stop(void) {
    counting = 0;
    return allocations;
}
#endif
