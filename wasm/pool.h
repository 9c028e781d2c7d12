/* The thread pool (pool.c): a task split into parts, run on the host's thread and the ready
 * helpers. task(args, part, parts, thread) computes part `part` of `parts` on thread
 * `thread` (0 the host's; helpers' ids, below POOL_MAX_THREADS, index per-thread scratch). */
#ifndef WEBGPT2_POOL_H
#define WEBGPT2_POOL_H

#ifdef __wasm_atomics__
#define POOL_MAX_THREADS 4
#else
#define POOL_MAX_THREADS 1
#endif

typedef void (*pool_task)(const void *args, int part, int parts, int thread);

/* How many parts a task may be split into now: 1 plus the ready helpers, at most the
 * threads(n) limit; 1 in the one-thread build. */
int pool_parts(void);

/* Runs task's parts 0 .. parts - 1 (part 0 on this thread) and returns when all are done. */
void pool_run(pool_task task, const void *args, int parts);

#endif
