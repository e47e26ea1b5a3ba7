/*
 * Multiboot v1 entry.  The loader enters in 32-bit protected mode, paging
 * off, flat segments, with %eax = 0x2badb002 and %ebx = physical address of
 * the multiboot info struct (flags at 0, cmdline at 16 valid if flags bit 2).
 * No address fields in the header (flags bit 16 clear): the ELF headers say
 * where to load us.
 */
#define MB_HEADER_MAGIC   0x1badb002
#define MB_HEADER_FLAGS   0
#define MB_LOADER_MAGIC   0x2badb002
#define MB_INFO_CMDLINE   (1 << 2)

	.section .multiboot, "a"
	.balign 4
	.long MB_HEADER_MAGIC
	.long MB_HEADER_FLAGS
	.long -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

	.section .text.head, "ax"
	.code32
	.globl _start
_start:
	cli
	cld
	movl $stack_top, %esp
	xorl %ecx, %ecx			/* cmdline = NULL */
	cmpl $MB_LOADER_MAGIC, %eax
	jne 1f
	testl $MB_INFO_CMDLINE, (%ebx)
	jz 1f
	movl 16(%ebx), %ecx
1:	pushl %ecx
	call kmain
2:	hlt
	jmp 2b

	.section .bss
	.balign 16
	.skip 4096
stack_top:
