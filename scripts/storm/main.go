// storm: the reconnect-storm benchmark. It opens N sessions (worker + client each), drops
// every client's TCP connection at once without a close frame, has each worker send one
// command while its client is away, then reconnects all clients at once with their lastSeq
// and measures how long until every client has received its server.replay holding that
// command. Prints one RESULT line of JSON.
//
//	storm -url http://127.0.0.1:8080 -api-key KEY -sessions 8000
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

type session struct {
	ID, WorkerToken, ClientToken, WebsocketURL string
	worker, client                            *websocket.Conn
	lastSeq                                    int
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "storm:", err)
		os.Exit(1)
	}
}

func create(base, key string) *session {
	req, _ := http.NewRequest("POST", base+"/v1/sessions", bytes.NewReader([]byte("{}")))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	must(err)
	defer resp.Body.Close()
	var s struct{ SessionId, WorkerToken, ClientToken, WebsocketUrl string }
	must(json.NewDecoder(resp.Body).Decode(&s))
	return &session{ID: s.SessionId, WorkerToken: s.WorkerToken, ClientToken: s.ClientToken, WebsocketURL: s.WebsocketUrl}
}

var dialer = websocket.Dialer{HandshakeTimeout: 60 * time.Second}

func connect(s *session, role string, hello map[string]any) (*websocket.Conn, map[string]any) {
	token := s.WorkerToken
	if role == "client" {
		token = s.ClientToken
	}
	c, _, err := dialer.Dial(fmt.Sprintf("%s?role=%s&token=%s", s.WebsocketURL, role, token), nil)
	must(err)
	hello["type"] = role + ".hello"
	must(c.WriteJSON(hello))
	var h map[string]any
	must(c.ReadJSON(&h))
	return c, h
}

func parallel(n, width int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, width)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) { defer wg.Done(); f(i); <-sem }(i)
	}
	wg.Wait()
}

func main() {
	base := flag.String("url", "http://127.0.0.1:8080", "server base URL")
	key := flag.String("api-key", "", "API key")
	n := flag.Int("sessions", 8000, "sessions (each: one worker and one client connection)")
	flag.Parse()
	http.DefaultTransport.(*http.Transport).MaxIdleConnsPerHost = 64

	t0 := time.Now()
	sessions := make([]*session, *n)
	parallel(*n, 64, func(i int) {
		s := create(*base, *key)
		s.worker, _ = connect(s, "worker", map[string]any{})
		s.client, _ = connect(s, "client", map[string]any{})
		sessions[i] = s
	})
	setup := time.Since(t0)

	// Drop every client at once: close the TCP socket, no close frame.
	for _, s := range sessions {
		s.client.UnderlyingConn().(*net.TCPConn).SetLinger(0)
		s.client.UnderlyingConn().Close()
	}
	time.Sleep(500 * time.Millisecond)
	// Each worker sends a command while its client is away.
	parallel(*n, 256, func(i int) {
		must(sessions[i].worker.WriteJSON(map[string]any{"type": "worker.command", "id": "storm", "command": "title"}))
	})
	time.Sleep(500 * time.Millisecond)

	// Everyone comes back at once and waits for its replay.
	lat := make([]time.Duration, *n)
	missing := 0
	var mu sync.Mutex
	start := time.Now()
	parallel(*n, *n, func(i int) {
		s := sessions[i]
		c, _ := connect(s, "client", map[string]any{"lastSeq": 0})
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		for {
			var m map[string]any
			if err := c.ReadJSON(&m); err != nil {
				mu.Lock()
				missing++
				mu.Unlock()
				return
			}
			if m["type"] == "server.replay" {
				raw, _ := json.Marshal(m["messages"])
				if !strings.Contains(string(raw), `"id":"storm"`) {
					mu.Lock()
					missing++
					mu.Unlock()
				}
				lat[i] = time.Since(start)
				c.Close()
				return
			}
		}
	})
	total := time.Since(start)
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	fmt.Printf("reconnect storm: %d clients, all replays in %.0f ms (p50 %.0f ms, p99 %.0f ms), missing %d; setup %.1f s\n",
		*n, ms(total), ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]), missing, setup.Seconds())
	out, _ := json.Marshal(map[string]any{"scenario": "storm", "sessions": *n, "all_ms": ms(total), "p50_ms": ms(lat[len(lat)/2]),
		"p99_ms": ms(lat[len(lat)*99/100]), "max_ms": ms(lat[len(lat)-1]), "missing": missing})
	fmt.Println("RESULT " + string(out))
}
