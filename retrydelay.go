package hato

import "time"

// checkRetryDelays refuses a delay that cannot be a queue's message TTL:
// not positive, or not whole milliseconds.
func checkRetryDelays(delays []time.Duration) error {
	for _, d := range delays {
		if d <= 0 || d%time.Millisecond != 0 {
			return invalid("retry delay %s: want a positive whole number of milliseconds", d)
		}
	}
	return nil
}
