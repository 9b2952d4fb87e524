#ifndef SB_ALLOCATION_COUNTER_H
#define SB_ALLOCATION_COUNTER_H

/// Starts counting heap allocations (malloc, calloc, realloc) made by the calling thread.
void sb_allocations_start(void);
/// Stops counting and returns the allocations the calling thread made since the start.
long sb_allocations_stop(void);
/// 0 in a sanitizer build, where malloc is not replaced and nothing is counted.
int sb_allocations_counted(void);

#endif
