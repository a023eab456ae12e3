package runid

import (
	"errors"

	"golang.org/x/sys/unix"
)

// fill reads the kernel CSPRNG with getrandom(2) directly. crypto/rand
// would do the same, but linking it pulls the FIPS module (its package
// initialisers and their page faults) into every `snakepit run`; on the
// slow-page-fault hosts we measured, that was a visible part of the
// wrapper's start.
func fill(b []byte) error {
	for len(b) > 0 {
		n, err := unix.Getrandom(b, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
