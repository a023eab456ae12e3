//go:build linux && amd64

#include "textflag.h"

// Offsets into fastGuardArgs (guardian_fast_linux_amd64.go; a test checks
// them against unsafe.Offsetof).
#define A_PIPE 0
#define A_KILL 8
#define A_NULL 16
#define A_EVENTS 24
#define A_NRANGES 32
#define A_RANGES 40
#define A_PATH 136
#define A_ARGV 144
#define A_ENVP 152
#define A_ARGVRM 160
#define A_CGPATH 168
#define A_COMM 176
#define A_SCRATCH 192
#define A_ONE 200
#define A_MASK 208
#define A_PFD 216
#define A_EVBUF 224

// How long the child waits for the killed run to empty before it leaves
// the removal to the full guardian: RMTRIES polls of at most 2 ms each.
#define RMTRIES 2500

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
	CMPQ	AX, $0
	JLT	full

	// Remove the run once it is empty: rmdir says EBUSY until then; wait
	// for cgroup.events to change (POLLPRI), or 2 ms, and try again. EBUSY
	// with "populated 0" means child cgroups: left to the full guardian.
	XORQ	R13, R13
	XORQ	R15, R15	// 1 once cgroup.events said populated 0
rmloop:
	MOVQ	$-100, DI	// AT_FDCWD
	MOVQ	A_CGPATH(R12), SI
	MOVQ	$0x200, DX	// AT_REMOVEDIR
	MOVQ	$263, AX	// SYS_unlinkat
	SYSCALL
	CMPQ	AX, $0
	JEQ	removed
	CMPQ	AX, $-16	// EBUSY
	JNE	full
	CMPQ	R15, $1
	JEQ	full
	INCQ	R13
	CMPQ	R13, $RMTRIES
	JGE	full
	LEAQ	A_PFD(R12), DI
	MOVQ	$1, SI
	MOVQ	$2, DX
	MOVQ	$7, AX	// SYS_poll
	SYSCALL
	// Read cgroup.events again (kernfs reports a change once per read):
	// "populated 0" is byte 10 == '0'.
	MOVQ	A_EVENTS(R12), DI
	LEAQ	A_EVBUF(R12), SI
	MOVQ	$16, DX
	XORQ	R10, R10
	MOVQ	$17, AX	// SYS_pread64
	SYSCALL
	CMPQ	AX, $11
	JLT	rmloop
	MOVB	(A_EVBUF+10)(R12), BX
	CMPB	BX, $0x30	// '0'
	JNE	rmloop
	MOVQ	$1, R15
	JMP	rmloop

removed:
	// Killed and removed: the full guardian only reports it and drops
	// what else the owner left (file records, other runs).
	MOVQ	A_ARGVRM(R12), R14
	JMP	execfull
full:
	// Not removed (still busy, child cgroups, an error): the full
	// guardian finishes the teardown.
	MOVQ	A_ARGV(R12), R14
execfull:
	MOVQ	$2, DI	// SIG_SETMASK
	LEAQ	A_MASK(R12), SI
	XORQ	DX, DX
	MOVQ	$8, R10
	MOVQ	$14, AX	// SYS_rt_sigprocmask
	SYSCALL
	MOVQ	A_PATH(R12), DI
	MOVQ	R14, SI
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
