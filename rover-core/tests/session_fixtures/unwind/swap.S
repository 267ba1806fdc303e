/* swap.S: two functions whose code is the same bytes whatever FRAME is, and
 * whose unwind rules are not: `outer_NAME` keeps a FRAME-byte frame (an
 * imm32 whatever the size, so the code does not move) around its call of
 * `inner_NAME`, which spins RDI times. Built twice with two frames, the two
 * libraries hold the same instructions at the same offsets: the unwinder's
 * remembered rules of one are wrong for the other. No PLT or GOT: the
 * fixture maps the file itself, unrelocated. */
	.text
	.globl	OUTER
	.type	OUTER, @function
OUTER:
	.cfi_startproc
	subq	$FRAME, %rsp
	.cfi_adjust_cfa_offset FRAME
	call	INNER
	addq	$FRAME, %rsp
	.cfi_adjust_cfa_offset -FRAME
	ret
	.cfi_endproc
	.size	OUTER, .-OUTER

	.type	INNER, @function
INNER:
	.cfi_startproc
	movq	%rdi, %rax
1:	subq	$1, %rax
	jnz	1b
	ret
	.cfi_endproc
	.size	INNER, .-INNER

	.section .note.GNU-stack,"",@progbits
