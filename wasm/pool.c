/* The thread pool of the threaded build (kernels-threads.wasm, shared memory): one task's
 * chunks shared between the host's thread and helper threads. In the one-thread build
 * pool_parts() is 1 and pool_run() runs every chunk in place.
 *
 * worker_loop(id): a helper's whole life. Helper threads (web workers that instantiate this
 *   module on the same shared memory, each with its own stack) call it with id 1 ..
 *   MAX_THREADS - 1 and stay in it, serving tasks. Never returns.
 * threads(n) -> i32: use at most n threads (the host's included) from now on; returns how
 *   many helpers are ready.
 *
 * pool_run(task, args, chunks, parts) on the host's thread publishes the task (a function
 * and its arguments, which stay on the host's stack in the shared memory), bumps `sequence`
 * and wakes the helpers; then the host's thread and helpers 1 .. parts - 1 each take the next
 * chunk (an atomic counter) until none is left, and the host waits until every chunk is
 * done. Work sharing rather than one equal part per thread: on a machine whose cores are
 * shared with the browser's own threads one thread is often descheduled for a while, and
 * with equal parts every product waited for it; with a few chunks per thread the others take
 * over its share. Which thread computes a chunk changes nothing in its results. Only helpers
 * whose `ready` bits are all set take part (pool_parts), so a helper still starting (a worker
 * boots asynchronously) is never waited for, and the host waits for chunks, not for helpers,
 * so a helper that wakes late finds nothing left and is not waited for either.
 *
 * `claim` holds the task's generation (the low 24 bits of `sequence`) above the next chunk's
 * index (8 bits); a helper claims with a compare-and-swap that also checks the generation, so
 * one that read a task and was descheduled before claiming cannot take a chunk of the next.
 *
 * Waiting spins first: a decode step hands ~50 products to the helpers, a few to a few
 * hundred microseconds apart, and a futex sleep and wake-up (memory.atomic.wait32 /
 * notify) costs tens of microseconds each way in a browser. So a helper polls `sequence`
 * for a while after its chunks before it sleeps, and the host polls `done` before it sleeps;
 * the chunk that completes a task notifies (cheap when nobody sleeps).
 */
#include "common.h"
#include "pool.h"

#ifdef __wasm_atomics__
/* Polls of an atomic word before sleeping: each a load and a compare, so some tens of
 * microseconds: enough for the gaps between one step's products (2^18 was no faster and
 * sometimes slowed a busy 2-core machine down). */
#define HELPER_SPINS (1 << 15)
#define HOST_SPINS (1 << 15)
#define INDEX_BITS 8

static pool_task job_task;
static const void *job_args;
static int job_chunks, job_parts;
static volatile int sequence, done;
static volatile u32 claim, ready;
static int max_threads = POOL_MAX_THREADS;

/* The next chunk of generation `generation`, or -1 when none is left (or the task is over). */
static int next_chunk(u32 generation, int chunks) {
    u32 word = __atomic_load_n(&claim, __ATOMIC_SEQ_CST);
    for (;;) {
        int index = (int)(word & ((1u << INDEX_BITS) - 1));
        if (word >> INDEX_BITS != generation || index >= chunks) return -1;
        if (__atomic_compare_exchange_n(&claim, &word, word + 1, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
            return index;
    }
}

/* Runs chunks until none is left; the one that completes the task wakes the host. */
static void share(pool_task task, const void *args, u32 generation, int chunks, int thread) {
    int chunk;
    while ((chunk = next_chunk(generation, chunks)) >= 0) {
        task(args, chunk, chunks, thread);
        if (__atomic_add_fetch(&done, 1, __ATOMIC_SEQ_CST) == chunks)
            __builtin_wasm_memory_atomic_notify((int *)&done, 1);
    }
}

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
        /* Read before claiming: the claim's generation check makes them this task's. */
        if (id < job_parts)
            share(job_task, job_args, (u32)seen & 0xffffff, job_chunks, id);
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

void pool_run(pool_task task, const void *args, int chunks, int parts) {
    if (parts <= 1 || chunks <= 1) {
        for (int chunk = 0; chunk < chunks; chunk++) task(args, chunk, chunks, 0);
        return;
    }
    int sequence_now = __atomic_load_n(&sequence, __ATOMIC_SEQ_CST) + 1;
    u32 generation = (u32)sequence_now & 0xffffff;
    job_task = task;
    job_args = args;
    job_chunks = chunks;
    job_parts = parts;
    __atomic_store_n(&done, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&claim, generation << INDEX_BITS, __ATOMIC_SEQ_CST);
    __atomic_store_n(&sequence, sequence_now, __ATOMIC_SEQ_CST);
    __builtin_wasm_memory_atomic_notify((int *)&sequence, POOL_MAX_THREADS);
    share(task, args, generation, chunks, 0);
    int spins = HOST_SPINS, now;
    while (__atomic_load_n(&done, __ATOMIC_SEQ_CST) < chunks && --spins > 0) {
    }
    while ((now = __atomic_load_n(&done, __ATOMIC_SEQ_CST)) < chunks)
        __builtin_wasm_memory_atomic_wait32((int *)&done, now, -1);
}
#else
int pool_parts(void) { return 1; }

void pool_run(pool_task task, const void *args, int chunks, int parts) {
    (void)parts;
    for (int chunk = 0; chunk < chunks; chunk++) task(args, chunk, chunks, 0);
}
#endif
