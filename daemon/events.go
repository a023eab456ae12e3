package daemon

import (
	"sync"

	"github.com/snakepit/snakepit/api"
)

// subBuffer is how many events a subscriber may lag behind before its
// stream is ended with an overflow event.
const subBuffer = 1024

// bus fans events out to the open GET /v1/events streams. Publishing never
// blocks: a subscriber whose buffer is full is dropped (its channel closed,
// overflow set) and must reconnect.
type bus struct {
	mu   sync.Mutex
	subs map[*sub]struct{}
}

type sub struct {
	c chan api.Event
	// uid >= 0 restricts the stream to runs owned by uid.
	uid      int
	overflow bool // set before c is closed
}

// ownedEvent is an event with the owner of its run, for filtering.
type ownedEvent struct {
	api.Event
	owner int
}

func newBus() *bus { return &bus{subs: make(map[*sub]struct{})} }

func (b *bus) subscribe(uid int) *sub {
	s := &sub{c: make(chan api.Event, subBuffer), uid: uid}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

// unsubscribe removes s; it is safe after s was dropped.
func (b *bus) unsubscribe(s *sub) {
	b.mu.Lock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.c)
	}
	b.mu.Unlock()
}

func (b *bus) publish(ev ownedEvent) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if s.uid >= 0 && s.uid != ev.owner {
			continue
		}
		select {
		case s.c <- ev.Event:
		default:
			s.overflow = true
			delete(b.subs, s)
			close(s.c)
		}
	}
}

// closeAll ends every stream (shutdown).
func (b *bus) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		delete(b.subs, s)
		close(s.c)
	}
}

func (b *bus) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}
