// The fiber scheduler behind emu.h, and one exported launcher per kernel: emu_<kernel>(grid, block, shared bytes,
// kernel parameters as the CUDA driver takes them: an array of pointers to each argument's bytes). Returns 0, or -1
// with emu_error() saying why (a deadlock at a barrier).
#include "emu.h"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../main/cuda/kernels.cu"

// x86-64 System V context switch: saves the callee-saved registers and the stack pointer of the running fiber in
// *from, resumes the one whose stack pointer is *to. No system call, unlike swapcontext.
extern "C" void emu_switch(void** from, void* const* to);
asm(R"(
.text
.globl emu_switch
.hidden emu_switch
.type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq (%rsi), %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch,.-emu_switch
)");

namespace emu {

emu_dim3 threadIdx_, blockIdx_, blockDim_, gridDim_;

namespace {

constexpr size_t STACK = 256 * 1024;

struct Fiber {
    void* sp = nullptr;
    std::vector<unsigned char> stack;
    emu_dim3 tid{};
    bool done = false;
};

struct Barrier {
    int arrived = 0;
    unsigned long long generation = 0;
};

std::vector<Fiber> fibers;
void* schedulerSp = nullptr;
int current = -1;
int live = 0;
std::function<void()> body;
std::vector<unsigned char> sharedMemory;
Barrier blockBarrier;
std::vector<Barrier> warpBarriers;
std::vector<int> warpLive;
std::vector<unsigned long long> exchange;
unsigned long long progress = 0;
std::string error;

void yield() {
    emu_switch(&fibers[current].sp, &schedulerSp);
}

[[noreturn]] void entry() {
    body();
    Fiber& f = fibers[current];
    f.done = true;
    live--;
    warpLive[current / 32]--;
    progress++;
    emu_switch(&f.sp, &schedulerSp);
    std::abort(); // a finished fiber is never resumed
}

void prepare(Fiber& f) {
    if (f.stack.empty()) {
        f.stack.resize(STACK);
    }
    uintptr_t top = reinterpret_cast<uintptr_t>(f.stack.data() + f.stack.size()) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top - 16);
    sp[0] = reinterpret_cast<void*>(&entry); // where emu_switch's ret goes; entry starts with rsp ≡ 8 (mod 16)
    sp[1] = nullptr;
    sp -= 6; // rbp rbx r12 r13 r14 r15, popped before the ret
    for (int i = 0; i < 6; i++) {
        sp[i] = nullptr;
    }
    f.sp = sp;
    f.done = false;
}

/** Waits at b until `expected` fibers of the scope arrived or finished. */
void wait(Barrier& b, int expected, const int& liveInScope) {
    unsigned long long gen = b.generation;
    b.arrived++;
    for (;;) {
        if (b.generation != gen) {
            return;
        }
        int finished = expected - liveInScope;
        if (b.arrived + finished >= expected) {
            b.arrived = 0;
            b.generation++;
            progress++;
            return;
        }
        yield();
    }
}

} // namespace

void syncthreads() {
    wait(blockBarrier, (int) fibers.size(), live);
}

void syncwarp() {
    int w = current / 32;
    int lanes = std::min<int>(32, (int) fibers.size() - w * 32);
    wait(warpBarriers[w], lanes, warpLive[w]);
}

unsigned long long shuffle(unsigned long long v, int srcLane) {
    int w = current / 32;
    exchange[current] = v;
    syncwarp();
    int src = w * 32 + srcLane;
    unsigned long long r = src < (int) fibers.size() ? exchange[src] : v;
    syncwarp();
    return r;
}

int lane() {
    return current & 31;
}

void* dynamicShared() {
    return sharedMemory.data();
}

int launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shared, std::function<void()> kernel) {
    int threads = (int) (bx * by * bz);
    if (threads <= 0 || threads > 1024) {
        error = "block of " + std::to_string(threads) + " threads";
        return -1;
    }
    fibers.resize(threads);
    warpBarriers.assign((threads + 31) / 32, Barrier{});
    warpLive.assign((threads + 31) / 32, 0);
    exchange.assign(threads, 0);
    sharedMemory.assign(shared + 16, 0);
    blockDim_ = {bx, by, bz};
    gridDim_ = {gx, gy, gz};
    body = std::move(kernel);
    for (unsigned z = 0; z < gz; z++) {
        for (unsigned y = 0; y < gy; y++) {
            for (unsigned x = 0; x < gx; x++) {
                blockIdx_ = {x, y, z};
                blockBarrier = Barrier{};
                for (int t = 0; t < threads; t++) {
                    prepare(fibers[t]);
                    fibers[t].tid = {(unsigned) t % bx, (unsigned) (t / bx) % by, (unsigned) (t / (bx * by))};
                    warpLive[t / 32] = 0;
                }
                for (int t = 0; t < threads; t++) {
                    warpLive[t / 32]++;
                }
                live = threads;
                int stuck = 0;
                unsigned rounds = 0;
                while (live > 0) {
                    unsigned long long before = progress;
                    int waiting = 0;
                    // alternate the order from round to round, so a missing barrier between a write by one thread
                    // and a read by another shows up as a wrong result whichever of the two comes first
                    bool backwards = (rounds++ & 1) != 0;
                    for (int i = 0; i < threads; i++) {
                        int t = backwards ? threads - 1 - i : i;
                        if (fibers[t].done) {
                            continue;
                        }
                        current = t;
                        threadIdx_ = fibers[t].tid;
                        emu_switch(&schedulerSp, &fibers[t].sp);
                        if (!fibers[t].done) {
                            waiting++;
                        }
                    }
                    // a round in which nothing finished and no barrier opened, with everyone waiting: nobody ever will
                    stuck = progress == before && waiting == live && waiting > 0 ? stuck + 1 : 0;
                    if (stuck > 2) {
                        {
                            error = "deadlock: " + std::to_string(waiting) + " of " + std::to_string(threads)
                                    + " threads wait at a barrier the others never reach (block " + std::to_string(x) + ","
                                    + std::to_string(y) + "," + std::to_string(z) + ")";
                            fibers.clear(); // their stacks are abandoned mid-call
                            return -1;
                        }
                    }
                }
            }
        }
    }
    current = -1;
    return 0;
}

template <typename... A, size_t... I>
void call(void (*k)(A...), void** p, std::index_sequence<I...>) {
    k(*static_cast<std::remove_cv_t<A>*>(p[I])...);
}

template <typename... A>
std::function<void()> bind(void (*k)(A...), void** p) {
    return [k, p] { call(k, p, std::index_sequence_for<A...>{}); };
}

} // namespace emu

extern "C" const char* emu_error() {
    return emu::error.c_str();
}

#define EMU_KERNEL(name)                                                                                              \
    extern "C" int emu_##name(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,          \
                              unsigned shared, void** params) {                                                      \
        return emu::launch(gx, gy, gz, bx, by, bz, shared, emu::bind(name, params));                                 \
    }
#define DEEPSERVE_KERNEL(name) EMU_KERNEL(name)
#include "../../main/cuda/kernels.list"
