package hato

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// opsServer starts the ops server of a service that never connects.
func opsServer(t *testing.T) string {
	t.Helper()
	s, err := New("ops", WithURL("amqp://guest:guest@127.0.0.1:1/"), WithOpsServer("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.startOps(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stopOps)
	return s.OpsAddr()
}

// Issue 19: every method answered 200.
func TestOpsAnswers405ToAnythingButGETAndHEAD(t *testing.T) {
	addr := opsServer(t)
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, "PATCH"} {
		req, _ := http.NewRequest(m, "http://"+addr+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		want := http.StatusOK
		if m != http.MethodGet && m != http.MethodHead {
			want = http.StatusMethodNotAllowed
		}
		if resp.StatusCode != want {
			t.Errorf("%s /healthz: %d, want %d", m, resp.StatusCode, want)
		}
	}
}

// Issue 19: idle keep-alive connections and POSTs that never sent their
// body were held open for ever.
func TestOpsServerClosesIdleAndStalledConnections(t *testing.T) {
	old := opsTimeouts
	opsTimeouts.idle, opsTimeouts.read, opsTimeouts.header = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { opsTimeouts = old })
	addr := opsServer(t)
	for name, req := range map[string]string{
		"idle keep-alive": "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"stalled POST":    "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
		"stalled headers": "GET /healthz HTTP/1.1\r\nHost: x\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, req); err != nil {
				t.Fatal(err)
			}
			// The server must close the connection; the deadline only
			// bounds the test.
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err = io.Copy(io.Discard, bufio.NewReader(c))
			if err != nil {
				t.Fatalf("connection still open: %v", err)
			}
		})
	}
}
