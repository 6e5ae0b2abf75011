// Package admin creates the Pub/Sub resources the queue configuration describes — per queue a topic, the
// worker subscription (ack deadline, retry policy, dead-letter policy, retention, exactly-once) and a
// dead-letter topic with an inspection subscription — against the emulator or real Pub/Sub. Re-running it
// is a no-op; a subscription whose settings drifted from the file is updated to match.
package admin
