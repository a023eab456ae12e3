package daemon

import (
	"testing"

	"github.com/snakepit/snakepit/api"
)

func TestBusFiltersByOwner(t *testing.T) {
	b := newBus()
	all, mine := b.subscribe(-1), b.subscribe(1000)
	b.publish(ownedEvent{Event: api.Event{Type: api.EventRunCreated, Run: "aaaaaaa"}, owner: 0})
	b.publish(ownedEvent{Event: api.Event{Type: api.EventRunCreated, Run: "bbbbbbb"}, owner: 1000})
	if got := len(all.c); got != 2 {
		t.Errorf("root stream got %d events, want 2", got)
	}
	if got := len(mine.c); got != 1 {
		t.Fatalf("uid 1000 stream got %d events, want 1", got)
	}
	if ev := <-mine.c; ev.Run != "bbbbbbb" {
		t.Errorf("uid 1000 saw run %s", ev.Run)
	}
	b.unsubscribe(all)
	b.unsubscribe(mine)
	b.unsubscribe(mine) // twice is fine
	if b.count() != 0 {
		t.Errorf("%d streams left", b.count())
	}
}

func TestBusOverflow(t *testing.T) {
	b := newBus()
	s := b.subscribe(-1)
	for range subBuffer + 1 {
		b.publish(ownedEvent{Event: api.Event{Type: api.EventWorkerStarted}})
	}
	n := 0
	for range s.c {
		n++
	}
	if n != subBuffer || !s.overflow {
		t.Errorf("slow reader: %d events, overflow %v; want %d and true", n, s.overflow, subBuffer)
	}
	if b.count() != 0 {
		t.Errorf("dropped stream still subscribed")
	}
	b.unsubscribe(s) // after a drop: no double close
}
