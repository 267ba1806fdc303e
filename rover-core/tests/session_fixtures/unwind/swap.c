/* swap.c: maps a library of swap.S (argv[1]) itself, calls its `outer_*`
 * (at file offset argv[3]) for ever, and on SIGUSR1 maps the other library
 * (argv[2]) at the very same address in its place, then says `swapped`.
 * The same code at the same addresses, with other unwind rules. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef long (*outer_fn)(long);

static volatile sig_atomic_t swap;
volatile long sink;

static void on_usr1(int sig)
{
	(void)sig;
	swap = 1;
}

static void *map_library(const char *path, void *at, size_t *len)
{
	struct stat st;
	void *p;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || fstat(fd, &st)) {
		perror(path);
		exit(1);
	}
	p = mmap(at, st.st_size, PROT_READ | PROT_EXEC, MAP_PRIVATE | (at ? MAP_FIXED : 0), fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	close(fd);
	*len = st.st_size;
	return p;
}

__attribute__((noipa)) long call_outer(outer_fn outer, long n)
{
	long r = outer(n);

	sink += r;
	return r;
}

int main(int argc, char **argv)
{
	size_t len;
	long offset;
	char *base;
	int swapped = 0;

	if (argc != 4)
		return 2;
	offset = strtol(argv[3], 0, 0);
	base = map_library(argv[1], 0, &len);
	signal(SIGUSR1, on_usr1);
	puts("ready");
	fflush(stdout);
	for (;;) {
		if (swap && !swapped) {
			size_t second;

			munmap(base, len);
			if (map_library(argv[2], base, &second) != base)
				return 1;
			len = second;
			swapped = 1;
			puts("swapped");
			fflush(stdout);
		}
		call_outer((outer_fn)(base + offset), 2000000);
	}
}
