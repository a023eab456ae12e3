package main

// The command-line parser: one table of commands and flags that parses the
// arguments and writes the help, the shell completions and the man page.
//
// Our own small parser, not the standard library's flag (single-dash flags,
// usage dumps, no short forms) nor spf13/pflag: it links no package
// initialisers and adds no dependency to every `snakepit run` wrapper
// (start-up measured equal, docs/DESIGN.md "Builds"), and each flag carries
// what help, completion and man need (argument name, short form, values).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/snakepit/snakepit/spec"
)

// errHelp is -h/--help: help goes to stdout and the exit status is 0.
var errHelp = errors.New("help requested")

// action runs a command once its flags are parsed; args are the operands.
type action func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// command is one subcommand.
type command struct {
	name     string
	summary  string // one line, lower case, no full stop
	synopsis string // after "snakepit NAME", e.g. "[OPTION]... -- CMD [ARG]..."
	// exits are the exit statuses the command may return besides 0 and 2,
	// keys of exitTable; passStatus: CMD's own status passes through.
	exits      []int
	passStatus bool
	// interspersed lets flags follow operands (ps --json, kill ID --grace
	// 1s); commands that take a CMD stop at the first operand instead.
	interspersed bool
	// operands says how to complete operands: "runid", "command" (a run ID
	// and then a command), "shell", "" for none.
	operands string
	// define registers the flags and returns what runs after parsing;
	// raw commands (internal, argv built by a package) parse their own.
	define func(fs *flagSet) action
	raw    action
	hidden bool
}

// commands is filled by init functions in the files of each subcommand.
var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// flag is one flag of a command.
type optDef struct {
	long  string
	short rune
	arg   string // name of the value in help ("DUR"); "" for a switch
	usage string
	def   string   // default shown in help; "" for none
	vals  []string // the values it takes, for completion
	comp  string   // completion of the value: "file", "dir", "user", "group", "command"
	set   func(string) error
	isSet bool
}

// Def sets the default shown in help.
func (f *optDef) Def(d string) *optDef { f.def = d; return f }

// Vals sets the values completion offers.
func (f *optDef) Vals(v ...string) *optDef { f.vals = v; return f }

// Comp sets how completion finds the value ("file", "dir", "user", "group").
func (f *optDef) Comp(c string) *optDef { f.comp = c; return f }

// spelled is the flag as help shows it: "-E, --setenv=K=V".
func (f *optDef) spelled() string {
	s := "    "
	if f.short != 0 {
		s = "-" + string(f.short) + ", "
	}
	s += "--" + f.long
	if f.arg != "" {
		s += "=" + f.arg
	}
	return s
}

// name is how an error names the flag.
func (f *optDef) name() string { return "--" + f.long }

// flagSet holds a command's flags in the order help lists them.
type flagSet struct {
	cmd   *command
	flags []*optDef
	args  []string // operands after Parse
	raw   []string // the arguments as given
}

func newFlagSet(c *command) *flagSet {
	fs := &flagSet{cmd: c}
	fs.Bool("help", 'h', "print this help and exit", new(bool))
	return fs
}

// Func adds a flag taking a value, parsed by set.
func (fs *flagSet) Func(long string, short rune, arg, usage string, set func(string) error) *optDef {
	f := &optDef{long: long, short: short, arg: arg, usage: usage, set: set}
	fs.flags = append(fs.flags, f)
	return f
}

// BoolFunc adds a switch: --name, or --name=true/false.
func (fs *flagSet) BoolFunc(long string, short rune, usage string, set func(bool) error) *optDef {
	f := fs.Func(long, short, "", usage, func(s string) error {
		v, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		return set(v)
	})
	return f
}

// Bool adds a switch stored in p.
func (fs *flagSet) Bool(long string, short rune, usage string, p *bool) *optDef {
	return fs.BoolFunc(long, short, usage, func(v bool) error { *p = v; return nil })
}

// String adds a flag whose value is stored in p.
func (fs *flagSet) String(long string, short rune, arg, usage string, p *string) *optDef {
	return fs.Func(long, short, arg, usage, func(s string) error { *p = s; return nil })
}

// Strings adds a repeatable flag.
func (fs *flagSet) Strings(long string, short rune, arg, usage string, p *[]string) *optDef {
	return fs.Func(long, short, arg, usage, func(s string) error { *p = append(*p, s); return nil })
}

// Duration adds a duration flag (a unit is required: 5s, 500ms).
func (fs *flagSet) Duration(long string, short rune, usage string, p *time.Duration) *optDef {
	f := fs.Func(long, short, "DUR", usage, func(s string) error {
		d, err := spec.ParseDuration(s)
		if err == nil && d < 0 {
			err = fmt.Errorf("%w: %v is negative", spec.ErrBadDuration, d)
		}
		*p = d
		return err
	})
	if *p > 0 {
		f.def = p.String()
	}
	return f
}

// Int adds a non-negative integer flag.
func (fs *flagSet) Int(long string, short rune, arg, usage string, p *int) *optDef {
	return fs.Func(long, short, arg, usage, func(s string) error {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			return fmt.Errorf("%q is not a number >= 0", s)
		}
		*p = v
		return nil
	})
}

// Set reports whether the flag was given.
func (fs *flagSet) Set(long string) bool {
	f := fs.lookup(long)
	return f != nil && f.isSet
}

func (fs *flagSet) lookup(long string) *optDef {
	for _, f := range fs.flags {
		if f.long == long {
			return f
		}
	}
	return nil
}

func (fs *flagSet) lookupShort(c rune) *optDef {
	for _, f := range fs.flags {
		if f.short == c {
			return f
		}
	}
	return nil
}

// flagError is a bad flag: one line, then "Try 'snakepit CMD --help'".
type flagError struct {
	msg string
	err error // the parser's error, kept for its sentinel
}

func (e *flagError) Error() string { return e.msg }
func (e *flagError) Unwrap() error { return e.err }

// Args returns the operands.
func (fs *flagSet) Args() []string { return fs.args }

// Parse reads flags from args: --name=V, --name V, -x V, -xV, grouped
// switches (-qh), and -- to end the flags. A long flag with one dash
// (-run-id) is still read, as the standard library took it.
func (fs *flagSet) Parse(args []string) error {
	fs.raw = args
	help := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			fs.args = append(fs.args, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			if !fs.cmd.interspersed {
				fs.args = append(fs.args, args[i:]...)
				break
			}
			fs.args = append(fs.args, a)
			continue
		}
		var f *optDef
		var val string
		hasVal := false
		name, v, eq := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "--") || (len(name) > 1 && fs.lookup(name) != nil) {
			if f = fs.lookup(name); f == nil {
				return fs.errorf(nil, "unknown option '--%s'", name)
			}
			val, hasVal = v, eq
		} else {
			// Short flags, grouped: -qh, -Cdir, -E K=V.
			rest := a[1:]
			for rest != "" {
				c := []rune(rest)[0]
				rest = rest[len(string(c)):]
				if f = fs.lookupShort(c); f == nil {
					return fs.errorf(nil, "unknown option '-%c'", c)
				}
				if f.arg != "" {
					if rest != "" {
						val, hasVal = rest, true
					}
					break
				}
				if f.long == "help" {
					help = true
				}
				f.isSet = true
				_ = f.set("true")
				f = nil
			}
			if f == nil {
				continue
			}
		}
		if f.arg == "" {
			if f.long == "help" {
				help = true
			}
			if !hasVal {
				val = "true"
			}
		} else if !hasVal {
			if i+1 >= len(args) {
				return fs.errorf(nil, "option '%s' needs a value (%s=%s)", f.name(), f.name(), f.arg)
			}
			i++
			val = args[i]
		}
		f.isSet = true
		if err := f.set(val); err != nil {
			return fs.valueError(f, val, err)
		}
	}
	if help {
		return errHelp
	}
	return nil
}

// valueError is a bad value of f: a spec error keeps its own wording and
// sentinel (the daemon API reports the same), others name the flag and
// the form it wants.
func (fs *flagSet) valueError(f *optDef, val string, err error) error {
	var fe *spec.FieldError
	if errors.As(err, &fe) {
		if fe.Flag == "" {
			fe.Flag = f.name()
		}
		return specError{fe}
	}
	want := f.arg
	if len(f.vals) > 0 {
		want = strings.Join(f.vals, "|")
	}
	return fs.errorf(err, "%s %s: %v (want %s=%s)", f.name(), strconv.Quote(val), err, f.name(), want)
}

func (fs *flagSet) errorf(err error, format string, args ...any) error {
	return &flagError{msg: fmt.Sprintf(format, args...), err: err}
}

// conflict is the error for two flags that contradict each other.
func conflict(a, b string) error {
	return usageError(fmt.Sprintf("%s and %s contradict each other", a, b))
}

// usageIn is a usage error of a command: report prints the line that
// points to its help after the error.
type usageIn struct {
	cmd string // "" for the top level
	err error
}

func (e usageIn) Error() string { return e.err.Error() }
func (e usageIn) Unwrap() error { return e.err }

// tryHelp is the second line of a usage error.
func (e usageIn) tryHelp() string {
	if e.cmd == "" {
		return "Try 'snakepit --help'"
	}
	return "Try 'snakepit " + e.cmd + " --help'"
}

// flagsOf returns a command's flag table (for help, completion, man).
func flagsOf(c *command) *flagSet {
	fs := newFlagSet(c)
	if c.define != nil {
		c.define(fs)
	}
	return fs
}

// usageLine is "snakepit NAME SYNOPSIS".
func (c *command) usageLine() string {
	s := "snakepit " + c.name
	if c.synopsis != "" {
		s += " " + c.synopsis
	}
	return s
}

// writeHelp writes a command's help: what `snakepit CMD --help` and
// `snakepit help CMD` print.
func writeHelp(w io.Writer, c *command) {
	fs := flagsOf(c)
	fmt.Fprintf(w, "Usage: %s\n", c.usageLine())
	fmt.Fprintf(w, "%s.\n\nOptions:\n", capitalize(c.summary))
	width := 0
	for _, f := range fs.flags {
		width = max(width, len(f.spelled()))
	}
	for _, f := range fs.flags {
		u := f.usage
		if f.def != "" {
			u += " (default " + f.def + ")"
		}
		fmt.Fprintf(w, "  %-*s  %s\n", width, f.spelled(), u)
	}
	fmt.Fprintf(w, "\nExit status:\n")
	for _, e := range exitsOf(c) {
		fmt.Fprintf(w, "  %-5s %s\n", e.status, e.meaning)
	}
	fmt.Fprintf(w, "\nFull documentation: man snakepit\n")
}

// topUsage is `snakepit --help`.
func topUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: snakepit COMMAND [OPTION]... [ARG]...")
	fmt.Fprintln(w, "Run commands in a cgroup of their own; nothing they start outlives them.")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range visibleCommands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nOptions:")
	fmt.Fprintln(w, "  -h, --help     print this help and exit")
	fmt.Fprintln(w, "  -v, --version  print the version and exit")
	fmt.Fprintln(w, "\n'snakepit help COMMAND' or 'snakepit COMMAND --help' lists a command's options and exit statuses.")
	fmt.Fprintln(w, "Full documentation: man snakepit")
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// exitLine is one exit status a command's help lists.
type exitLine struct{ status, meaning string }

// exitsOf lists a command's exit statuses from exitTable: 0, 2, CMD's
// status where it passes through, then the command's own.
func exitsOf(c *command) []exitLine {
	out := []exitLine{{"0", "success"}}
	if c.passStatus {
		out[0] = exitLine{"CMD's", "the command's own status (128+N if killed by signal N)"}
	}
	for _, code := range append([]int{exitUsage}, c.exits...) {
		out = append(out, exitLine{strconv.Itoa(code), exitMeaning(code)})
	}
	return out
}

func visibleCommands() []*command {
	var out []*command
	for _, name := range sortedCommands() {
		if c := commands[name]; !c.hidden {
			out = append(out, c)
		}
	}
	return out
}

func init() {
	register(&command{
		name:     "help",
		summary:  "print the help of snakepit or of a command",
		synopsis: "[COMMAND]",
		operands: "subcommand",
		define: func(fs *flagSet) action {
			return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				switch {
				case len(args) == 0:
					topUsage(stdout)
					return nil
				case len(args) > 1:
					return usageError("help takes one command")
				}
				c, ok := commands[args[0]]
				if !ok || c.define == nil {
					return usageError(fmt.Sprintf("unknown command %q", args[0]))
				}
				writeHelp(stdout, c)
				return nil
			}
		},
	})
}
