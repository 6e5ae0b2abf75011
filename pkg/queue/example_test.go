package queue_test

import (
	"fmt"

	"github.com/pubq/pubq/pkg/queue"
)

func ExampleParse() {
	cfg, err := queue.Parse([]byte(`
version: 1
defaults:
  backoff: {initial: 1s, max: 1m}
queues:
  bulk:
    topic: pubq-bulk
    subscription: pubq-bulk-worker
    dead_letter_topic: pubq-bulk-dead
    dead_letter_subscription: pubq-bulk-dead-inspect
    concurrency: 64
    kinds: [email.send]
`))
	if err != nil {
		panic(err)
	}
	q, _ := cfg.Route("email.send")
	fmt.Println(q.Name, q.Topic, q.Concurrency, q.AckDeadline, q.Backoff.Initial, q.Backoff.MaxAttempts)
	_, err = queue.Parse([]byte("version: 1\nqueues:\n  bulk:\n    topic: pubq-bulk\n    ack_deadline: 5s\n"))
	fmt.Println(err)
	// Output:
	// bulk pubq-bulk 64 1m0s 1s 10
	// pubq: queue "bulk": subscription: required
}
