/*
 * QLoraNet finalizer guard: TorchSharp's two dispose entry points, with frees that the .NET finalizer thread asks for
 * held back for a while before they reach libLibTorchSharp.
 *
 * Why: TorchSharp 0.107 passes native handles to libLibTorchSharp as plain IntPtrs, with no GC.KeepAlive after the
 * call. A Scalar it makes for an argument (the alpha = 1 of every Tensor.add(Tensor), the 2 of x * 2.0) or a tensor
 * temporary nobody holds is unreachable from the moment its handle is read; when another thread's allocation starts
 * a GC during the native call, the finalizer thread frees the object while the op still reads it ("Unknown scalar
 * type", "Expected false to be true", or a wrong value). The finalizer thread frees only objects nobody disposed, so
 * holding exactly those back costs nothing on the hot path: an explicit Dispose (a dispose scope's, a using's) frees
 * at once, as before. An op reads its Scalar arguments and takes its own references to tensors when it starts, so a
 * hold of a second or two outlasts any reader by orders of magnitude.
 *
 * How it is used (src/Native/FinalizerGuard.cs): this library is linked against libLibTorchSharp.so (DT_NEEDED), and
 * TorchSharp's P/Invokes are resolved through its handle (NativeLibrary.SetDllImportResolver), so dlsym finds the two
 * functions below here and every other one in libLibTorchSharp. The real dispose functions are handed over by
 * qln_guard_init, so this library calls nothing by name but libc.
 *
 * Build: build.sh beside this file (plain C, libc symbols of GLIBC_2.2.5 / 2.17 only, so it loads on any glibc
 * TorchSharp supports).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

typedef void (*dispose_fn)(void *);

struct held
{
    void *handle;
    dispose_fn dispose;
    int64_t due_ns;
    struct held *next;
};

static dispose_fn real_scalar_dispose, real_tensor_dispose;
static int64_t hold_ns;
static pthread_t finalizer_thread;
static int finalizer_known;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct held *first, *last;       /* FIFO: every entry is held for the same time, so due times only grow */
static long pending;                    /* entries in the queue; read without the lock as a fast path */
static long held_total;                 /* entries ever queued (for tests and diagnostics) */
static long released_total;             /* queued entries freed since */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Frees every held handle whose time is up; the frees run outside the lock. */
static void release_due(int64_t now)
{
    if (__atomic_load_n(&pending, __ATOMIC_RELAXED) == 0) return;
    struct held *due = NULL, **tail = &due;
    pthread_mutex_lock(&lock);
    while (first != NULL && first->due_ns <= now)
    {
        struct held *h = first;
        first = h->next;
        if (first == NULL) last = NULL;
        h->next = NULL;
        *tail = h;
        tail = &h->next;
        released_total++;
        __atomic_sub_fetch(&pending, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&lock);
    while (due != NULL)
    {
        struct held *h = due;
        due = h->next;
        h->dispose(h->handle);
        free(h);
    }
}

static void dispose(void *handle, dispose_fn real)
{
    int64_t now = now_ns();
    if (finalizer_known && pthread_equal(pthread_self(), finalizer_thread))
    {
        struct held *h = malloc(sizeof *h);
        if (h == NULL) { real(handle); return; }   /* out of memory: free now, as TorchSharp would */
        h->handle = handle;
        h->dispose = real;
        h->due_ns = now + hold_ns;
        h->next = NULL;
        pthread_mutex_lock(&lock);
        if (last == NULL) first = h; else last->next = h;
        last = h;
        __atomic_add_fetch(&pending, 1, __ATOMIC_RELAXED);
        held_total++;
        pthread_mutex_unlock(&lock);
    }
    else real(handle);
    release_due(now);
}

/* TorchSharp's Scalar.Dispose / ~Scalar. */
EXPORT void THSTorch_dispose_scalar(void *scalar) { dispose(scalar, real_scalar_dispose); }

/* TorchSharp's Tensor.Dispose / ~Tensor. */
EXPORT void THSTensor_dispose(void *tensor) { dispose(tensor, real_tensor_dispose); }

/* The real functions (libLibTorchSharp's exports) and the hold; called once, before any resolution through us. */
EXPORT void qln_guard_init(dispose_fn scalar_dispose, dispose_fn tensor_dispose, int64_t hold_ms)
{
    real_scalar_dispose = scalar_dispose;
    real_tensor_dispose = tensor_dispose;
    hold_ns = hold_ms * 1000000;
}

/* Called from a .NET finalizer: the thread that runs them all. */
EXPORT void qln_guard_mark_finalizer_thread(void)
{
    finalizer_thread = pthread_self();
    __atomic_store_n(&finalizer_known, 1, __ATOMIC_RELEASE);
}

EXPORT int qln_guard_finalizer_known(void) { return __atomic_load_n(&finalizer_known, __ATOMIC_ACQUIRE); }

EXPORT long qln_guard_pending(void) { return __atomic_load_n(&pending, __ATOMIC_RELAXED); }

EXPORT long qln_guard_held_total(void)
{
    pthread_mutex_lock(&lock);
    long n = held_total;
    pthread_mutex_unlock(&lock);
    return n;
}

EXPORT long qln_guard_released_total(void)
{
    pthread_mutex_lock(&lock);
    long n = released_total;
    pthread_mutex_unlock(&lock);
    return n;
}

/* Frees what is due now (the guard also does this on every dispose call). */
EXPORT void qln_guard_release_due(void) { release_due(now_ns()); }
