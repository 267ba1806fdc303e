/* The shared-library part of deep.c's call chain: four levels built, like
 * the program, with -O2 -fomit-frame-pointer, then a call back into the
 * program. Each level keeps a frame of its own (a volatile buffer) and works
 * after its call, so the call is not a tail call. */

#define LEVEL __attribute__((noipa))

typedef void (*next_fn)(int);

volatile unsigned long lib_sink;

LEVEL void lib_level8(int x, next_fn next) {
    volatile char pad[88];
    pad[0] = (char)x;
    next(x + 1);
    lib_sink += pad[0];
}

LEVEL void lib_level7(int x, next_fn next) {
    volatile char pad[72];
    pad[0] = (char)x;
    lib_level8(x + 1, next);
    lib_sink += pad[0];
}

LEVEL void lib_level6(int x, next_fn next) {
    volatile char pad[56];
    pad[0] = (char)x;
    lib_level7(x + 1, next);
    lib_sink += pad[0];
}

LEVEL void lib_level5(int x, next_fn next) {
    volatile char pad[40];
    pad[0] = (char)x;
    lib_level6(x + 1, next);
    lib_sink += pad[0];
}
