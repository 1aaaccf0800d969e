package main

import (
	"fmt"
	"strings"
	"time"
)

// isDelayQueue reports whether name looks like a delay queue of delayed
// retries: "<queue>.retry.<Go duration>".
func isDelayQueue(name string) bool {
	i := strings.LastIndex(name, ".retry.")
	if i <= 0 {
		return false
	}
	d, err := time.ParseDuration(name[i+len(".retry."):])
	return err == nil && d > 0
}

// delayList is the --retry-delays flag: durations, comma-separated.
type delayList []time.Duration

func (l *delayList) String() string {
	parts := make([]string, len(*l))
	for i, d := range *l {
		parts[i] = d.String()
	}
	return strings.Join(parts, ",")
}

func (l *delayList) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil || d <= 0 {
			return fmt.Errorf("retry delay %q: want a positive duration such as 10s", p)
		}
		*l = append(*l, d)
	}
	return nil
}

// retryText is the names lines of the delay queues.
func retryText(queues []string) string {
	var b strings.Builder
	for _, q := range queues {
		b.WriteString("\ndelay queue        " + q)
	}
	return b.String()
}
