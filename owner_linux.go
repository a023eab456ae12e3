package snakepit

import "github.com/snakepit/snakepit/record"

// Owner identifies the supervisor that owns a run (package record).
type Owner = record.Owner
