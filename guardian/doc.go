// Package guardian watches a run's owner and tears its runs down the moment
// it dies, however it dies. A guardian is a small process outside every
// run, in its own session; this package builds and parses its command line
// (the hidden `snakepit __guardian` subcommand), starts it, and is its
// body (Run).
package guardian
