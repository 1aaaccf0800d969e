package hatotest

import "strings"

// words splits a routing or binding key into its dot-separated words as
// RabbitMQ does: the empty key has no words; "a." has two ("a" and "").
func words(key string) []string {
	if key == "" {
		return nil
	}
	return strings.Split(key, ".")
}

// topicMatch reports whether a topic exchange routes a message with
// routingKey to a queue bound with bindingKey, as RabbitMQ's topic exchange
// does: "*" stands for exactly one word, "#" for zero or more words, any
// other word matches itself (wildcards count only as whole words: "a*"
// matches the word "a*" only).
func topicMatch(bindingKey, routingKey string) bool {
	pat, key := words(bindingKey), words(routingKey)
	// m[j]: the pattern's first i words match the key's first j words.
	m := make([]bool, len(key)+1)
	m[0] = true
	for _, p := range pat {
		next := make([]bool, len(key)+1)
		for j := 0; j <= len(key); j++ {
			switch {
			case p == "#":
				next[j] = m[j] || (j > 0 && next[j-1])
			case j == 0:
			case p == "*" || p == key[j-1]:
				next[j] = m[j-1]
			}
		}
		m = next
	}
	return m[len(key)]
}
