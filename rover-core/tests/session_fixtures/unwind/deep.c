/* Fixture for rover's unwinder tests and benches/unwind_vs_perf.sh, built
 * with -O2 -fomit-frame-pointer -fno-optimize-sibling-calls against
 * libdeep.c. Every path goes main -> level1..level4 (here) -> lib_level5..
 * lib_level8 (libdeep.so) -> level9, level10 (here, called back through a
 * pointer) and then, by argv[1]:
 *   cpu     spin_here: spins;
 *   block   block_here: sleeps 2 ms at a time in libc's nanosleep;
 *   signal  interrupted_here: spins until a SIGPROF interrupts it, whose
 *           handler on_signal -> handler_level1..3 -> handler_spin spins
 *           and never returns (so the stack passes through __restore_rt);
 *   mix     mix_here: splits its iterations 6:3:1 between three leaves,
 *           mix_a, mix_b -> mix_b2 and mix_c (three stacks with known
 *           shares, for benches/unwind_vs_perf.sh).
 * The leaf prints "ready" once it is there and works until killed: a test
 * reads the line, then profiles a process that does nothing else. Each
 * level keeps a frame of its own (a volatile buffer, a different size per
 * level) and works after its call, so no call is a tail call. */

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LEVEL __attribute__((noipa))

typedef void (*next_fn)(int);
void lib_level5(int x, next_fn next);

volatile unsigned long sink;
static void (*leaf)(int);

static void ready(void) {
    /* write(2) rather than stdio: the signal path calls it in a handler. */
    static const char line[] = "ready\n";
    if (write(1, line, sizeof line - 1) != sizeof line - 1) _exit(1);
}

LEVEL void spin_here(int x) {
    ready();
    for (;;) sink += x;
}

LEVEL void block_here(int x) {
    struct timespec ts = { 0, 2 * 1000 * 1000 };
    ready();
    for (;;) {
        nanosleep(&ts, NULL);
        sink += x;
    }
}

LEVEL void mix_a(int x) {
    for (int i = 0; i < 6000000; i++) sink += x;
}

LEVEL void mix_b2(int x) {
    for (int i = 0; i < 3000000; i++) sink += x;
}

LEVEL void mix_b(int x) {
    volatile char pad[40];
    pad[0] = (char)x;
    mix_b2(x + 1);
    sink += pad[0];
}

LEVEL void mix_c(int x) {
    for (int i = 0; i < 1000000; i++) sink += x;
}

LEVEL void mix_here(int x) {
    ready();
    for (;;) {
        mix_a(x);
        mix_b(x);
        mix_c(x);
    }
}

LEVEL void handler_spin(int x) {
    ready();
    for (;;) sink += x;
}

LEVEL void handler_level3(int x) {
    volatile char pad[24];
    pad[0] = (char)x;
    handler_spin(x + 1);
    sink += pad[0];
}

LEVEL void handler_level2(int x) {
    volatile char pad[40];
    pad[0] = (char)x;
    handler_level3(x + 1);
    sink += pad[0];
}

LEVEL void handler_level1(int x) {
    volatile char pad[56];
    pad[0] = (char)x;
    handler_level2(x + 1);
    sink += pad[0];
}

LEVEL void on_signal(int signo) {
    volatile char pad[72];
    pad[0] = (char)signo;
    handler_level1(signo);
    sink += pad[0];
}

LEVEL void interrupted_here(int x) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGPROF, &action, NULL) != 0) _exit(1);
    /* One shot after 20 ms of CPU time: the handler never returns. */
    struct itimerval timer = { { 0, 0 }, { 0, 20 * 1000 } };
    if (setitimer(ITIMER_PROF, &timer, NULL) != 0) _exit(1);
    for (;;) sink += x;
}

LEVEL void level10(int x) {
    volatile char pad[24];
    pad[0] = (char)x;
    leaf(x + 1);
    sink += pad[0];
}

LEVEL void level9(int x) {
    volatile char pad[104];
    pad[0] = (char)x;
    level10(x + 1);
    sink += pad[0];
}

LEVEL void level4(int x) {
    volatile char pad[88];
    pad[0] = (char)x;
    lib_level5(x + 1, level9);
    sink += pad[0];
}

LEVEL void level3(int x) {
    volatile char pad[72];
    pad[0] = (char)x;
    level4(x + 1);
    sink += pad[0];
}

LEVEL void level2(int x) {
    volatile char pad[56];
    pad[0] = (char)x;
    level3(x + 1);
    sink += pad[0];
}

LEVEL void level1(int x) {
    volatile char pad[40];
    pad[0] = (char)x;
    level2(x + 1);
    sink += pad[0];
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "cpu";
    if (strcmp(path, "cpu") == 0) leaf = spin_here;
    else if (strcmp(path, "block") == 0) leaf = block_here;
    else if (strcmp(path, "signal") == 0) leaf = interrupted_here;
    else if (strcmp(path, "mix") == 0) leaf = mix_here;
    else {
        fprintf(stderr, "usage: %s cpu|block|signal|mix\n", argv[0]);
        return 2;
    }
    level1(argc);
    return 0;
}
