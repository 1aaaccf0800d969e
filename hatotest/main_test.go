package hatotest_test

import (
	"testing"

	"github.com/hato-go/hato/internal/leak"
)

func TestMain(m *testing.M) {
	leak.VerifyTestMain(m)
}
