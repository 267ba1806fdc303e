/* exit.c: ends the guest with an exit status through QEMU's isa-debug-exit
 * device (iobase 0xf4): writing V makes qemu-system exit with (V << 1) | 1.
 * Debian's cloud kernels have no /dev/port, so a tiny static program does the
 * port write. Usage: rover-vm-exit STATUS (0..127). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/io.h>
#include <sys/reboot.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int status = argc > 1 ? atoi(argv[1]) : 1;

	if (status < 0 || status > 127)
		status = 127;
	sync();
	if (ioperm(0xf4, 1, 1) == 0)
		outb((unsigned char)status, 0xf4);
	else
		perror("rover-vm-exit: ioperm");
	/* Only reached without the device: power off, which the host reads as a
	 * failure because no status came back. */
	reboot(RB_POWER_OFF);
	return 1;
}
