package runid

import (
	"errors"
	"strings"
	"testing"
)

func TestGenerate(t *testing.T) {
	seen := make(map[string]bool)
	for i := 0; i < 10000; i++ {
		id := Generate()
		if err := Validate(id); err != nil {
			t.Fatalf("Generate() = %q: %v", id, err)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q after %d draws", id, i)
		}
		seen[id] = true
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"abc1234", true},
		{"0000000", true},
		{"zzzzzzz", true},
		{"", false},
		{"abc123", false},
		{"abc12345", false},
		{"ABCDEFG", false},
		{"../etc", false},
		{"../etc/", false},
		{"abc/123", false},
		{"abc 123", false},
		{"abc\x00123", false},
		{"äbc1234", false},
		{"ab\u00e91234", false},
		{"abc-123", false},
		{".......", false},
	} {
		err := Validate(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("Validate(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%q) error %v is not ErrInvalid", tc.in, err)
		}
	}
}

func TestExtract(t *testing.T) {
	for _, tc := range []struct {
		argv    []string
		want    string
		wantErr error
	}{
		{[]string{"python3", "w.py", "--snakepit-run-id", "abc1234"}, "abc1234", nil},
		{[]string{"python3", "w.py", "--run-id", "abc1234"}, "abc1234", nil},
		{[]string{"python3", "--snakepit-run-id=abc1234"}, "abc1234", nil},
		{[]string{"python3", "--run-id=abc1234", "--port", "1"}, "abc1234", nil},
		{[]string{"x", "--run-id=zzzzzzz", "--snakepit-run-id=abc1234"}, "zzzzzzz", nil},
		{[]string{"python3", "w.py"}, "", ErrNotFound},
		{nil, "", ErrNotFound},
		{[]string{"x", "--run-id"}, "", ErrInvalid},
		{[]string{"x", "--run-id", "../etc"}, "", ErrInvalid},
		{[]string{"x", "--run-id=ABCDEFG"}, "", ErrInvalid},
		{[]string{"x", "--run-idabc1234"}, "", ErrNotFound},
		{[]string{"x", "--snakepit-run-id-x=abc1234"}, "", ErrNotFound},
	} {
		got, err := Extract(tc.argv)
		if got != tc.want || !errors.Is(err, tc.wantErr) {
			t.Errorf("Extract(%q) = %q, %v; want %q, %v", tc.argv, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestExtractCmdline(t *testing.T) {
	got, err := ExtractCmdline([]byte("python3\x00w.py\x00--run-id\x00abc1234\x00"))
	if err != nil || got != "abc1234" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := ExtractCmdline(nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty cmdline: %v", err)
	}
	// A process that rewrote argv into one space-separated string hides the marker.
	if _, err := ExtractCmdline([]byte("python3 w.py --run-id abc1234\x00")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rewritten argv: %v", err)
	}
}

func TestExtractEnviron(t *testing.T) {
	got, err := ExtractEnviron([]byte("PATH=/bin\x00SNAKEPIT_RUN_ID=abc1234\x00HOME=/\x00"))
	if err != nil || got != "abc1234" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := ExtractEnviron([]byte("SNAKEPIT_RUN_ID=../etc\x00")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad env value: %v", err)
	}
}

func FuzzExtract(f *testing.F) {
	f.Add([]byte("python3\x00--run-id\x00abc1234\x00"))
	f.Add([]byte("--snakepit-run-id=abc1234"))
	f.Add([]byte("--run-id=../etc\x00"))
	f.Add([]byte("--run-id\x00"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		id, err := ExtractCmdline(raw)
		if err == nil {
			if verr := Validate(id); verr != nil {
				t.Fatalf("ExtractCmdline returned invalid id %q: %v", id, verr)
			}
			if !strings.Contains(string(raw), id) {
				t.Fatalf("id %q not in input", id)
			}
		} else if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) {
			t.Fatalf("unexpected error class: %v", err)
		}
	})
}

func FuzzValidate(f *testing.F) {
	f.Add("abc1234")
	f.Add("../etc")
	f.Add("ABCDEFG")
	f.Fuzz(func(t *testing.T, s string) {
		if Validate(s) != nil {
			return
		}
		if len(s) != Len || strings.ContainsAny(s, "/.\x00 ") || strings.ToLower(s) != s {
			t.Fatalf("Validate accepted %q", s)
		}
	})
}
