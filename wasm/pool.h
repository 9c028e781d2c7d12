/* The thread pool (pool.c): a task split into chunks, shared by the host's thread and the
 * ready helpers. task(args, chunk, chunks, thread) computes chunk `chunk` of `chunks` on
 * thread `thread` (0 the host's; helpers' ids, below POOL_MAX_THREADS, index per-thread
 * scratch); any thread may compute any chunk. */
#ifndef WEBGPT2_POOL_H
#define WEBGPT2_POOL_H

#ifdef __wasm_atomics__
#define POOL_MAX_THREADS 4
#else
#define POOL_MAX_THREADS 1
#endif

/* Chunks per thread: enough that the others can take over from a thread that the machine
 * has descheduled, few enough that claiming them stays cheap beside the product. */
#define POOL_CHUNKS_PER_THREAD 4

typedef void (*pool_task)(const void *args, int chunk, int chunks, int thread);

/* How many threads may share a task now: 1 plus the ready helpers, at most the threads(n)
 * limit; 1 in the one-thread build. */
int pool_parts(void);

/* Runs task's chunks 0 .. chunks - 1 (at most 255) on this thread and parts - 1 helpers and
 * returns when all are done. */
void pool_run(pool_task task, const void *args, int chunks, int parts);

#endif
