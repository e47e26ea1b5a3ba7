/*
 * PVH entry.  The VMM finds the 32-bit entry point in an ELF note (name
 * "Xen", type 18 = XEN_ELFNOTE_PHYS32_ENTRY) and jumps there in 32-bit
 * protected mode, paging off, flat segments, with %ebx = physical address
 * of struct hvm_start_info (magic at 0, cmdline_paddr at 24).
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC          0x336ec578

	.section .note.Xen, "a", @note
	.balign 4
	.long 2f - 1f			/* namesz */
	.long 4f - 3f			/* descsz */
	.long XEN_ELFNOTE_PHYS32_ENTRY	/* type */
1:	.asciz "Xen"
2:	.balign 4
	/* 8 bytes, like Linux: some loaders read the entry as a 64-bit word */
3:	.long _start, 0
4:	.balign 4

	.section .text.head, "ax"
	.code32
	.globl _start
_start:
	cli
	cld
	movl $stack_top, %esp
	xorl %eax, %eax			/* cmdline = NULL */
	testl %ebx, %ebx
	jz 1f
	cmpl $HVM_START_MAGIC, (%ebx)
	jne 1f
	cmpl $0, 28(%ebx)		/* cmdline above 4 GiB: unreachable */
	jne 1f
	movl 24(%ebx), %eax		/* cmdline_paddr, low half */
1:	pushl %eax
	call kmain
2:	hlt
	jmp 2b

	.section .bss
	.balign 16
	.skip 4096
stack_top:
