/*
 * Tiny test guest kernel for runu.
 *
 * Freestanding 32-bit code, entered in protected mode with paging off by
 * head_pvh.S (PVH direct boot) or head_multiboot.S (multiboot v1).  It
 * talks to the outside world only through I/O ports:
 *
 *   0x3f8  COM1 16550 UART: greeting, command line, "arg:" lines, result
 *   0xf4   QEMU isa-debug-exit: QEMU exits with status (N << 1) | 1
 *   0x64   i8042 command port: 0xfe pulses the CPU reset line
 *
 * Command line words (before a "--" separator):
 *   exit=N     print "bye N" and exit with N (the default, with N = 0);
 *              without isa-debug-exit, fall back to a reset
 *   idle       print "idling" and halt forever
 *   reset      print "bye reset" and reset the machine: i8042 reset if
 *              there is an i8042, else a triple fault
 * Every word after the first "--" is printed as "arg: <word>".  Unknown
 * words are ignored (VMMs like to add their own).  The last mode word wins.
 */

#define COM1            0x3f8
#define DEBUG_EXIT_PORT 0xf4
#define I8042_CMD_PORT  0x64
#define CMDLINE_MAX     4096

static inline void outb(unsigned short port, unsigned char val)
{
	__asm__ volatile("outb %0, %1" : : "a"(val), "Nd"(port));
}

static inline unsigned char inb(unsigned short port)
{
	unsigned char val;
	__asm__ volatile("inb %1, %0" : "=a"(val) : "Nd"(port));
	return val;
}

static void serial_init(void)
{
	outb(COM1 + 1, 0x00);	/* no interrupts */
	outb(COM1 + 3, 0x80);	/* DLAB on */
	outb(COM1 + 0, 0x01);	/* divisor 1: 115200 baud */
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03);	/* DLAB off, 8N1 */
}

static void serial_putc(char c)
{
	/* Wait (boundedly) for the transmit holding register to drain. */
	for (int i = 0; i < 100000; i++)
		if (inb(COM1 + 5) & 0x20)
			break;
	outb(COM1, (unsigned char)c);
}

static void put_str(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

static void put_mem(const char *s, int n)
{
	for (int i = 0; i < n; i++)
		serial_putc(s[i]);
}

static void put_uint(unsigned int v)
{
	char buf[10];
	int n = 0;

	do {
		buf[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		serial_putc(buf[--n]);
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Does the word w (length n) equal the NUL-terminated string s? */
static int word_is(const char *w, int n, const char *s)
{
	int i;

	for (i = 0; i < n; i++)
		if (s[i] != w[i])
			return 0;
	return s[i] == '\0';
}

static int word_has_prefix(const char *w, int n, const char *prefix)
{
	int i;

	for (i = 0; prefix[i]; i++)
		if (i >= n || w[i] != prefix[i])
			return 0;
	return 1;
}

static unsigned int parse_uint(const char *s, int n)
{
	unsigned int v = 0;

	for (int i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
		v = v * 10 + (unsigned int)(s[i] - '0');
	return v;
}

static void __attribute__((noreturn)) halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

/*
 * Load an empty IDT and raise a fault: the CPU triple faults, which QEMU
 * treats as a reset request (with -no-reboot: exit with status 0).  Use a
 * fault (ud2), not a software interrupt: on this host's paravirtual KVM an
 * "int3" with an empty IDT ends in "KVM internal error ... emulation failure"
 * and QEMU then sits there with the VM paused.
 */
static void __attribute__((noreturn)) triple_fault(void)
{
	static const struct {
		unsigned short limit;
		unsigned int base;
	} __attribute__((packed)) no_idt = { 0, 0 };

	__asm__ volatile("lidt %0; ud2" : : "m"(no_idt));
	halt_forever();
}

static void __attribute__((noreturn)) machine_reset(void)
{
	/*
	 * An absent I/O port reads as 0xff.  QEMU's microvm has no i8042 unless
	 * "-device i8042" is given; pc, q35 and Firecracker have one.
	 */
	if (inb(I8042_CMD_PORT) != 0xff) {
		outb(I8042_CMD_PORT, 0xfe);
		/*
		 * Firecracker handles the reset asynchronously, in another thread:
		 * wait for it with hlt.  No busy wait: on this host's paravirtual
		 * KVM a 20M-iteration register loop takes ~18 s (about 130 ms under
		 * TCG).
		 */
		halt_forever();
	}
	triple_fault();
}

static void __attribute__((noreturn)) machine_exit(unsigned int code)
{
	/* QEMU's isa-debug-exit exits at once, with status (code << 1) | 1. */
	outb(DEBUG_EXIT_PORT, (unsigned char)code);
	/* No such device here (e.g. Firecracker): reset instead. */
	machine_reset();
}

enum mode { MODE_EXIT, MODE_IDLE, MODE_RESET };

void __attribute__((noreturn)) kmain(const char *cmdline)
{
	enum mode mode = MODE_EXIT;
	unsigned int code = 0;
	int after_sep = 0;
	int len = 0;

	if (!cmdline)
		cmdline = "";
	while (len < CMDLINE_MAX && cmdline[len])
		len++;

	serial_init();
	put_str("Hello from the runu test kernel\n");
	put_str("cmdline: ");
	put_mem(cmdline, len);
	put_str("\n");

	for (int i = 0; i < len;) {
		const char *w;
		int n = 0;

		while (i < len && is_space(cmdline[i]))
			i++;
		w = cmdline + i;
		while (i < len && !is_space(cmdline[i])) {
			i++;
			n++;
		}
		if (n == 0)
			break;

		if (after_sep) {
			put_str("arg: ");
			put_mem(w, n);
			put_str("\n");
		} else if (word_is(w, n, "--")) {
			after_sep = 1;
		} else if (word_is(w, n, "idle")) {
			mode = MODE_IDLE;
		} else if (word_is(w, n, "reset")) {
			mode = MODE_RESET;
		} else if (word_has_prefix(w, n, "exit=")) {
			mode = MODE_EXIT;
			code = parse_uint(w + 5, n - 5);
		}
	}

	switch (mode) {
	case MODE_IDLE:
		put_str("idling\n");
		halt_forever();
	case MODE_RESET:
		put_str("bye reset\n");
		machine_reset();
	case MODE_EXIT:
	default:
		put_str("bye ");
		put_uint(code);
		put_str("\n");
		machine_exit(code);
	}
}
