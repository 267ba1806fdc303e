// The C++ fixture of rover's unwinder tests, built with g++ -O2
// -fomit-frame-pointer -fno-optimize-sibling-calls: main -> a member
// function -> a function template -> a call operator -> eight instances of
// a class template, down to a specialisation that prints "ready" and spins
// until killed. Mangled names (namespaces, templates, a call operator) that
// the symbolizer demangles; each level keeps a frame and works after its
// call, so no call is a tail call.

#include <unistd.h>

#define LEVEL __attribute__((noipa))

namespace rover_fixture {

volatile unsigned long sink;

namespace engine {

template <int N>
struct Stage {
    LEVEL static void run(int x) {
        volatile char pad[8 * N + 24];
        pad[0] = static_cast<char>(x);
        Stage<N - 1>::run(x + 1);
        sink += pad[0];
    }
};

template <>
struct Stage<0> {
    LEVEL static void run(int x) {
        static const char line[] = "ready\n";
        if (write(1, line, sizeof line - 1) != sizeof line - 1) _exit(1);
        for (;;) sink += x;
    }
};

}  // namespace engine

struct Worker {
    LEVEL void operator()(int x) {
        volatile char pad[32];
        pad[0] = static_cast<char>(x);
        engine::Stage<8>::run(x + 1);
        sink += pad[0];
    }
};

namespace detail {

template <typename Task>
LEVEL void dispatch(Task& task, int x) {
    volatile char pad[48];
    pad[0] = static_cast<char>(x);
    task(x + 1);
    sink += pad[0];
}

}  // namespace detail

class Runner {
public:
    LEVEL void start(int x) {
        volatile char pad[64];
        pad[0] = static_cast<char>(x);
        detail::dispatch(worker_, x + 1);
        sink += pad[0];
    }

private:
    Worker worker_;
};

}  // namespace rover_fixture

int main(int argc, char**) {
    rover_fixture::Runner runner;
    runner.start(argc);
    return 0;
}
