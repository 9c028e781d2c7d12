/* The thread pool of the threaded build (kernels-threads.wasm, shared memory): one task's
 * parts split between the host's thread and helper threads. In the one-thread build
 * pool_parts() is 1 and pool_run() runs the one part in place.
 *
 * worker_loop(id): a helper's whole life. Helper threads (web workers that instantiate this
 *   module on the same shared memory, each with its own stack) call it with id 1 ..
 *   MAX_THREADS - 1 and stay in it, serving tasks. Never returns.
 * threads(n) -> i32: use at most n threads (the host's included) from now on; returns how
 *   many helpers are ready.
 *
 * pool_run(task, args, parts) on the host's thread publishes the task (a function and its
 * arguments, which stay on the host's stack in the shared memory), bumps `sequence` and wakes
 * the helpers; helper i computes part i, counts itself in `finished`; the host's thread
 * computes part 0 and waits until every part is in. Only helpers 1 .. n whose `ready` bits
 * are all set take part (pool_parts), so a helper still starting (a worker boots
 * asynchronously) is never waited for.
 *
 * Waiting spins first: a decode step hands ~50 products to the helpers, a few to a few
 * hundred microseconds apart, and a futex sleep and wake-up (memory.atomic.wait32 /
 * notify) costs tens of microseconds each way in a browser. So a helper polls `sequence`
 * for a while after its part before it sleeps, and the host polls `finished` before it
 * sleeps; notify is called either way (cheap when nobody sleeps).
 */
#include "common.h"
#include "pool.h"

#ifdef __wasm_atomics__
/* Polls of an atomic word before sleeping: each a load and a compare, so some tens of
 * microseconds: enough for the gaps between one step's products (2^18 was no faster and
 * sometimes slowed a busy 2-core machine down). */
#define HELPER_SPINS (1 << 15)
#define HOST_SPINS (1 << 15)

static pool_task job_task;
static const void *job_args;
static int job_parts;
static volatile int sequence, finished;
static volatile u32 ready;
static int max_threads = POOL_MAX_THREADS;

EXPORT(worker_loop)
void worker_loop(int id) {
    int seen = __atomic_load_n(&sequence, __ATOMIC_SEQ_CST);
    /* After reading the sequence: a task published after this bit is seen is one this
     * helper has not seen yet. */
    __atomic_or_fetch(&ready, 1u << id, __ATOMIC_SEQ_CST);
    for (;;) {
        int spins = HELPER_SPINS;
        while (__atomic_load_n(&sequence, __ATOMIC_SEQ_CST) == seen && --spins > 0) {
        }
        while (__atomic_load_n(&sequence, __ATOMIC_SEQ_CST) == seen)
            __builtin_wasm_memory_atomic_wait32((int *)&sequence, seen, -1);
        seen = __atomic_load_n(&sequence, __ATOMIC_SEQ_CST);
        if (id < job_parts) {
            job_task(job_args, id, job_parts, id);
            __atomic_add_fetch(&finished, 1, __ATOMIC_SEQ_CST);
            __builtin_wasm_memory_atomic_notify((int *)&finished, 1);
        }
    }
}

EXPORT(threads)
int threads(int n) {
    max_threads = n < 1 ? 1 : n > POOL_MAX_THREADS ? POOL_MAX_THREADS : n;
    return __builtin_popcount(__atomic_load_n(&ready, __ATOMIC_SEQ_CST));
}

int pool_parts(void) {
    u32 bits = __atomic_load_n(&ready, __ATOMIC_SEQ_CST);
    int parts = 1;
    while (parts < max_threads && (bits >> parts) & 1) parts++;
    return parts;
}

void pool_run(pool_task task, const void *args, int parts) {
    if (parts <= 1) {
        task(args, 0, 1, 0);
        return;
    }
    job_task = task;
    job_args = args;
    job_parts = parts;
    __atomic_store_n(&finished, 0, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&sequence, 1, __ATOMIC_SEQ_CST);
    __builtin_wasm_memory_atomic_notify((int *)&sequence, POOL_MAX_THREADS);
    task(args, 0, parts, 0);
    int spins = HOST_SPINS, done;
    while (__atomic_load_n(&finished, __ATOMIC_SEQ_CST) < parts - 1 && --spins > 0) {
    }
    while ((done = __atomic_load_n(&finished, __ATOMIC_SEQ_CST)) < parts - 1)
        __builtin_wasm_memory_atomic_wait32((int *)&finished, done, -1);
}
#else
int pool_parts(void) { return 1; }

void pool_run(pool_task task, const void *args, int parts) {
    (void)parts;
    task(args, 0, 1, 0);
}
#endif
