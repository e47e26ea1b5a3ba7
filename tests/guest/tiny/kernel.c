/*
 * Tiny test guest kernel for runu.
 *
 * Freestanding 32-bit code, entered in protected mode with paging off by
 * head_pvh.S (PVH direct boot) or head_multiboot.S (multiboot v1).  It
 * talks to the outside world only through I/O ports:
 *
 *   0x3f8  COM1 16550 UART: greeting, command line, what it parsed, result
 *   0xf4   QEMU isa-debug-exit: QEMU exits with status (N << 1) | 1
 *   0x501  QEMU isa-debug-exit where Unikraft writes (16 bits): 41 for a
 *          clean halt (QEMU status 83), 42 for a crash (85)
 *   0x64   i8042 command port: 0xfe pulses the CPU reset line
 *
 * It reads its command line the way Unikraft 0.16 and later do:
 *   - words split on blanks; '...' and "..." group, a backslash escapes
 *     outside single quotes, quotes are removed ('' alone is no word);
 *   - the first word is the program name (argv[0]), never parsed;
 *   - library parameters are the words before the first "--", parsed only
 *     when at least one word stands between argv[0] and it; the words after
 *     it are the application's arguments (without such a "--" every word
 *     after argv[0] is);
 *   - a parameter NAME=[ v1 v2 ... ] is a list, NAME=v repeated appends.
 * It prints (after "cmdline: <line>") "uk: argv0=<w>", then, of the
 * parameters it knows: "uk: env K=V" for the environment that env.vars gave
 * (at most 8 entries taken, a later duplicate wins: posix-environ's
 * defaults), "uk: netdev.ip=<v>", "uk: virtio_mmio.device=<v>",
 * "uk: vfs.fstab=<v>" per value; then "arg: <w>" per application argument.
 *
 * Mode words, as parameters or application arguments (the last one wins):
 *   exit=N     print "bye N" and exit with N through 0xf4 (the default, with
 *              N = 0); without isa-debug-exit, fall back to a reset
 *   halt       print "bye halt" and halt like Unikraft: 41 to 0x501
 *   crash      print "bye crash" and crash like Unikraft: 42 to 0x501
 *              (halt and crash reset, as Unikraft's Firecracker builds do,
 *              when no isa-debug-exit device is there)
 *   idle       print "idling" and halt forever
 *   reset      print "bye reset" and reset the machine: i8042 reset if
 *              there is an i8042, else a triple fault
 * Other words are ignored (VMMs like to add their own).
 *
 * File systems: like a Unikraft image, it "has" some (fs_drivers: ramfs,
 * extract and 9pfs; built with -DTINY_NO_9PFS, no 9pfs, like an image without
 * lib9pfs, and then the NUL-terminated name "9pfs" is nowhere in it). A
 * vfs.fstab entry without a driver field, or naming one it lacks, makes it
 * stop before the application as Unikraft 0.17 does (the mount fails at boot
 * and the guest crashes): "uk: vfs.fstab: cannot mount <entry>", then
 * "bye crash" and 42 to 0x501.
 */

#define COM1            0x3f8
#define DEBUG_EXIT_PORT 0xf4
#define UK_EXIT_PORT    0x501
#define UK_EXIT_HALT    41
#define UK_EXIT_CRASH   42
#define MAX_ARGS        256
#define ENV_MAX         8
#define I8042_CMD_PORT  0x64
#define CMDLINE_MAX     4096

static inline void outb(unsigned short port, unsigned char val)
{
	__asm__ volatile("outb %0, %1" : : "a"(val), "Nd"(port));
}

static inline void outw(unsigned short port, unsigned short val)
{
	__asm__ volatile("outw %0, %1" : : "a"(val), "Nd"(port));
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

static void __attribute__((noreturn)) unikraft_exit(unsigned short value)
{
	outw(UK_EXIT_PORT, value);
	machine_reset();
}

static int str_len(const char *s)
{
	int n = 0;

	while (s[n])
		n++;
	return n;
}

static int str_eq(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

static int has_prefix(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

static char words[CMDLINE_MAX + 1];
static char *argv[MAX_ARGS];

/* Split like Unikraft's uk_argnparse into argv; returns argc. */
static int split(const char *s, int len)
{
	int argc = 0, o = 0, in_word = 0, escape = 0;
	char quote = 0;

	for (int i = 0; i < len && argc < MAX_ARGS; i++) {
		char c = s[i];

		if (escape) {
			escape = 0;
			if (quote == '"' && c != '"' && c != '\\')
				words[o++] = '\\';
			words[o++] = c;
			continue;
		}
		if (!quote && (is_space(c) || c == '\v')) {
			if (in_word) {
				words[o++] = '\0';
				in_word = 0;
			}
			continue;
		}
		if ((c == '\'' || c == '"') && (!quote || quote == c)) {
			quote = quote ? 0 : c;
			continue;
		}
		if (!in_word) {
			argv[argc++] = words + o;
			in_word = 1;
		}
		if (c == '\\' && quote != '\'') {
			escape = 1;
			continue;
		}
		words[o++] = c;
	}
	if (escape)
		words[o++] = '\\';
	words[o] = '\0';
	return argc;
}

static const char *env[ENV_MAX];
static int env_count;

static const char *const fs_drivers[] = {
	"ramfs",
	"extract",
#ifndef TINY_NO_9PFS
	"9pfs",
#endif
};
static int fstab_failed;

/* A vfs.fstab entry <dev>:<mount point>:<driver>[:...] this kernel could mount. */
static int fstab_mountable(const char *entry)
{
	int field = 0, start = 0, i = 0;

	for (;; i++) {
		if (entry[i] != ':' && entry[i] != '\0')
			continue;
		if (field == 2) {
			for (unsigned int d = 0; d < sizeof(fs_drivers) / sizeof(fs_drivers[0]); d++)
				if (i > start && word_is(entry + start, i - start, fs_drivers[d]))
					return 1;
			return 0;
		}
		if (entry[i] == '\0')
			return 0;
		field++;
		start = i + 1;
	}
}

static void param_value(const char *name, int name_len, const char *value)
{
	if (name_len == 8 && word_is(name, 8, "env.vars")) {
		if (env_count < ENV_MAX)
			env[env_count++] = value;
		return;
	}
	if ((name_len == 9 && word_is(name, 9, "netdev.ip")) ||
	    (name_len == 18 && word_is(name, 18, "virtio_mmio.device")) ||
	    (name_len == 9 && word_is(name, 9, "vfs.fstab"))) {
		put_str("uk: ");
		put_mem(name, name_len);
		put_str("=");
		put_str(value);
		put_str("\n");
		if (name_len == 9 && word_is(name, 9, "vfs.fstab") && !fstab_mountable(value)) {
			put_str("uk: vfs.fstab: cannot mount ");
			put_str(value);
			put_str("\n");
			fstab_failed = 1;
		}
	}
}

static int key_len(const char *kv)
{
	int n = 0;

	while (kv[n] && kv[n] != '=')
		n++;
	return n;
}

/* The environment env.vars set: each variable once, with its last value. */
static void print_env(void)
{
	for (int i = 0; i < env_count; i++) {
		int n = key_len(env[i]), later = 0;

		for (int j = i + 1; j < env_count; j++) {
			int same = key_len(env[j]) == n;

			for (int k = 0; same && k < n; k++)
				same = env[j][k] == env[i][k];
			later |= same;
		}
		if (later)
			continue;
		put_str("uk: env ");
		put_str(env[i]);
		put_str("\n");
	}
}

enum mode { MODE_EXIT, MODE_IDLE, MODE_RESET, MODE_HALT, MODE_CRASH };

static enum mode mode = MODE_EXIT;
static unsigned int code;

static int mode_word(const char *w)
{
	if (str_eq(w, "idle"))
		mode = MODE_IDLE;
	else if (str_eq(w, "reset"))
		mode = MODE_RESET;
	else if (str_eq(w, "halt"))
		mode = MODE_HALT;
	else if (str_eq(w, "crash"))
		mode = MODE_CRASH;
	else if (has_prefix(w, "exit=")) {
		mode = MODE_EXIT;
		code = parse_uint(w + 5, str_len(w) - 5);
	} else
		return 0;
	return 1;
}

/* The index of the "--" that ends the parameters, or 0 when they are not parsed. */
static int find_stop(int argc)
{
	int in_list = 0;

	for (int i = 1; i < argc; i++) {
		const char *w = argv[i];
		int n = str_len(w);

		if (in_list) {
			if (n && w[n - 1] == ']')
				in_list = 0;
			continue;
		}
		if (str_eq(w, "--"))
			return i > 1 ? i : 0;
		for (int k = 0; k < n; k++)
			if (w[k] == '=') {
				in_list = w[k + 1] == '[' && !(n - k > 2 && w[n - 1] == ']');
				break;
			}
	}
	return 0;
}

static void parse_params(int stop)
{
	const char *list = 0;
	int list_len = 0;

	for (int i = 1; i < stop; i++) {
		char *w = argv[i];
		int n = str_len(w);

		if (list) {
			if (n && w[n - 1] == ']') {
				w[--n] = '\0';
				if (n)
					param_value(list, list_len, w);
				list = 0;
			} else {
				param_value(list, list_len, w);
			}
			continue;
		}
		if (mode_word(w))
			continue;
		int eq = 0;

		while (eq < n && w[eq] != '=')
			eq++;
		if (eq == n)
			continue;
		char *value = w + eq + 1;

		if (value[0] == '[') {
			int vn = str_len(++value);

			list = w;
			list_len = eq;
			if (vn && value[vn - 1] == ']') {
				value[vn - 1] = '\0';
				list = 0;
			}
			if (value[0])
				param_value(w, eq, value);
			continue;
		}
		param_value(w, eq, value);
	}
}

void __attribute__((noreturn)) kmain(const char *cmdline)
{
	int len = 0, argc, stop;

	if (!cmdline)
		cmdline = "";
	while (len < CMDLINE_MAX && cmdline[len])
		len++;

	serial_init();
	put_str("Hello from the runu test kernel\n");
	put_str("cmdline: ");
	put_mem(cmdline, len);
	put_str("\n");

	argc = split(cmdline, len);
	put_str("uk: argv0=");
	put_str(argc ? argv[0] : "");
	put_str("\n");
	stop = find_stop(argc);
	parse_params(stop);
	print_env();
	if (fstab_failed) {
		put_str("bye crash\n");
		unikraft_exit(UK_EXIT_CRASH);
	}
	for (int i = stop ? stop + 1 : 1; i < argc; i++) {
		put_str("arg: ");
		put_str(argv[i]);
		put_str("\n");
		mode_word(argv[i]);
	}

	switch (mode) {
	case MODE_IDLE:
		put_str("idling\n");
		halt_forever();
	case MODE_RESET:
		put_str("bye reset\n");
		machine_reset();
	case MODE_HALT:
		put_str("bye halt\n");
		unikraft_exit(UK_EXIT_HALT);
	case MODE_CRASH:
		put_str("bye crash\n");
		unikraft_exit(UK_EXIT_CRASH);
	case MODE_EXIT:
	default:
		put_str("bye ");
		put_uint(code);
		put_str("\n");
		machine_exit(code);
	}
}
