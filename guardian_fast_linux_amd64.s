//go:build linux && amd64

#include "textflag.h"

// Offsets into fastGuardArgs (guardian_fast_linux_amd64.go; a test checks
// them against unsafe.Offsetof).
#define A_PIPE 0
#define A_KILL 8
#define A_NULL 16
#define A_NRANGES 24
#define A_RANGES 32
#define A_PATH 96
#define A_ARGV 104
#define A_ENVP 112
#define A_COMM 120
#define A_SCRATCH 136
#define A_ONE 144
#define A_MASK 152

// func fastGuardClone(args *fastGuardArgs, stack uintptr) (pid int, errno uintptr)
//
// clone(CLONE_VM|SIGCHLD) onto stack. The parent returns the child's PID.
// The child never returns to Go: it runs only the raw system calls below,
// on registers (R12 = args) and the args block, never touching its stack
// or the Go runtime, with every signal blocked (the caller blocked them
// before the clone, so no Go signal handler can run in it).
TEXT ·fastGuardClone(SB),NOSPLIT|NOFRAME,$0-32
	MOVQ	args+0(FP), R12
	MOVQ	stack+8(FP), SI
	MOVQ	$0x111, DI	// CLONE_VM (0x100) | SIGCHLD (17)
	XORQ	DX, DX
	XORQ	R10, R10
	XORQ	R8, R8
	MOVQ	$56, AX	// SYS_clone
	SYSCALL
	CMPQ	AX, $0
	JEQ	child
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	NEGQ	AX
	MOVQ	$-1, pid+16(FP)
	MOVQ	AX, errno+24(FP)
	RET
ok:
	MOVQ	AX, pid+16(FP)
	MOVQ	$0, errno+24(FP)
	RET

child:
	// setsid(): no terminal or process-group signal reaches us.
	MOVQ	$112, AX
	SYSCALL
	// prctl(PR_SET_NAME, comm): tell us apart from the wrapper in ps.
	MOVQ	$15, DI
	LEAQ	A_COMM(R12), SI
	XORQ	DX, DX
	XORQ	R10, R10
	XORQ	R8, R8
	MOVQ	$157, AX
	SYSCALL
	// stdio on /dev/null: dup3(null, 0..2, 0).
	MOVQ	A_NULL(R12), DI
	MOVQ	$0, SI
	XORQ	DX, DX
	MOVQ	$292, AX
	SYSCALL
	MOVQ	A_NULL(R12), DI
	MOVQ	$1, SI
	XORQ	DX, DX
	MOVQ	$292, AX
	SYSCALL
	MOVQ	A_NULL(R12), DI
	MOVQ	$2, SI
	XORQ	DX, DX
	MOVQ	$292, AX
	SYSCALL
	// close_range over every gap between the fds we keep: we must not
	// hold the caller's pipes open.
	XORQ	R13, R13
ranges:
	CMPQ	R13, A_NRANGES(R12)
	JGE	wait
	MOVQ	R13, R14
	SHLQ	$4, R14
	ADDQ	R12, R14
	MOVQ	A_RANGES(R14), DI
	MOVQ	(A_RANGES+8)(R14), SI
	XORQ	DX, DX
	MOVQ	$436, AX	// SYS_close_range
	SYSCALL
	INCQ	R13
	JMP	ranges

wait:
	// Block in read(2) on the pipe whose write end only the owner holds:
	// it returns 0 once the owner is gone, however it died.
	MOVQ	A_PIPE(R12), DI
	LEAQ	A_SCRATCH(R12), SI
	MOVQ	$1, DX
	MOVQ	$0, AX	// SYS_read
	SYSCALL
	CMPQ	AX, $-4	// EINTR
	JEQ	wait
	CMPQ	AX, $0
	JGT	wait

	// The owner is gone: kill the run at once.
	MOVQ	A_KILL(R12), DI
	LEAQ	A_ONE(R12), SI
	MOVQ	$1, DX
	MOVQ	$1, AX	// SYS_write
	SYSCALL
	// ENODEV/ENOENT: the run's cgroup is gone, the owner tore it down.
	CMPQ	AX, $-19
	JEQ	done
	CMPQ	AX, $-2
	JEQ	done

	// Leave the rest (wait until empty, remove, records) to the full
	// guardian, with signals unblocked again.
	MOVQ	$2, DI	// SIG_SETMASK
	LEAQ	A_MASK(R12), SI
	XORQ	DX, DX
	MOVQ	$8, R10
	MOVQ	$14, AX	// SYS_rt_sigprocmask
	SYSCALL
	MOVQ	A_PATH(R12), DI
	MOVQ	A_ARGV(R12), SI
	MOVQ	A_ENVP(R12), DX
	MOVQ	$59, AX	// SYS_execve
	SYSCALL
	MOVQ	$127, DI
	MOVQ	$231, AX	// SYS_exit_group
	SYSCALL

done:
	XORQ	DI, DI
	MOVQ	$231, AX
	SYSCALL
