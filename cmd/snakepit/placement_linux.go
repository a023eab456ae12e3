package main

import (
	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/systemd"
)

// placementFlags choose where a new run's cgroup goes under systemd
// (package placement); --cgroup-parent, beside them, overrides all.
type placementFlags struct {
	noSystemd  bool
	slice      string
	properties []string
}

func (p *placementFlags) define(fs *flagSet) {
	fs.Bool("no-systemd", 0, "under systemd too, make the run below <cgroup2 root>/snakepit instead of below our delegated unit or in a transient scope of its own", &p.noSystemd)
	fs.String("slice", 0, "SLICE", "slice of the run's transient scope, when our unit is not delegated (default: our own)", &p.slice)
	fs.Strings("property", 'p', "NAME=VALUE", "property of the run's transient scope, as systemd-run's (repeatable): MemoryMax=1G, CPUQuota=50%, TasksMax=100, ...", &p.properties)
}

// check rejects what cannot apply: scope settings beside --no-systemd or
// --cgroup-parent, and properties that cannot be passed on.
func (p *placementFlags) check(fs *flagSet) error {
	for _, scopeFlag := range []string{"slice", "property"} {
		if !fs.Set(scopeFlag) {
			continue
		}
		for _, other := range []string{"no-systemd", "cgroup-parent"} {
			if fs.Set(other) {
				return conflict("--"+other, "--"+scopeFlag)
			}
		}
	}
	for _, s := range p.properties {
		if _, err := systemd.ParseProperty(s); err != nil {
			return usageError("--property: " + err.Error())
		}
	}
	return nil
}

func (p *placementFlags) apply(o *snakepit.Options) {
	o.NoSystemd, o.Slice, o.Properties = p.noSystemd, p.slice, p.properties
}
