package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Attribute names of the wire format.
const (
	AttrKind        = "pubq_kind"
	AttrKey         = "pubq_key"
	AttrVersion     = "pubq_version"
	AttrID          = "pubq_id"
	AttrEnqueuedAt  = "pubq_enqueued_at"
	AttrAttempt     = "pubq_attempt"
	AttrTraceParent = "traceparent"
	AttrTraceState  = "tracestate"
	// AttrPrevTraceParent is set by pubq on a retry: the failed attempt's span, which the next attempt links to.
	AttrPrevTraceParent = "pubq_prev_traceparent"
	// AttrPubSubTraceParent is where the Pub/Sub client libraries' own tracing writes the W3C context
	// (and AttrPubSubTraceState its tracestate, when there is one).
	AttrPubSubTraceParent = "googclient_traceparent"
	AttrPubSubTraceState  = "googclient_tracestate"

	// Attributes added when pubq dead-letters a message.
	AttrDeadReason   = "pubq_dead_reason"   // one of the Reason* values
	AttrDeadError    = "pubq_dead_error"    // the last error, truncated to 1 KiB
	AttrDeadAttempts = "pubq_dead_attempts" // attempts made
	AttrDeadQueue    = "pubq_dead_queue"    // queue the message came from
	AttrDeadAt       = "pubq_dead_at"       // RFC 3339 time
	// AttrDeadDropped counts the message's own attributes left off its dead letter to fit Pub/Sub's
	// limit (only for a foreign message that came with nearly 100).
	AttrDeadDropped = "pubq_dead_dropped_attributes"
)

// Limits of the wire format.
const (
	Version         = 1
	MaxKeyBytes     = 256
	MaxPayloadBytes = 256 << 10 // well under Pub/Sub's 10 MB, so batches stay efficient
)

// Reasons a message is dead-lettered.
const (
	ReasonUndecodable = "undecodable"  // not a pubq job (missing or invalid envelope)
	ReasonUnknownKind = "unknown_kind" // no handler for its kind on this queue
	ReasonExhausted   = "exhausted"    // failed on its last attempt
	ReasonPermanent   = "permanent"    // handler said the job can never succeed
)

// Job is one job as a handler sees it.
type Job struct {
	ID         string
	Kind       string
	Key        string
	Queue      string
	Payload    json.RawMessage
	EnqueuedAt time.Time
	Attempt    int               // 1-based attempt this execution is
	Attributes map[string]string // attributes not part of the envelope (trace context included)
}

// Unmarshal decodes the payload into v.
func (j *Job) Unmarshal(v any) error {
	if err := json.Unmarshal(j.Payload, v); err != nil {
		return Permanent(fmt.Errorf("pubq: decoding %s payload: %w", j.Kind, err))
	}
	return nil
}

// DecodeError says why a message is not a valid job; Field names the attribute or "data".
type DecodeError struct {
	Field  string
	Reason string
}

func (e *DecodeError) Error() string { return "pubq: invalid job: " + e.Field + ": " + e.Reason }

// ErrInvalid matches every *DecodeError with errors.Is.
var ErrInvalid = errors.New("pubq: invalid job")

func (e *DecodeError) Is(target error) bool { return target == ErrInvalid }

// validKindSyntax reports whether kind matches ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$, by hand: it runs
// for every delivery, and the regexp was the costliest step of decoding.
func validKindSyntax(kind string) bool {
	start := true // at the start of a dot-separated segment
	for i := 0; i < len(kind); i++ {
		c := kind[i]
		switch {
		case c >= 'a' && c <= 'z':
		case (c >= '0' && c <= '9') || c == '_':
			if start {
				return false
			}
		case c == '.':
			if start {
				return false
			}
			start = true
			continue
		default:
			return false
		}
		start = false
	}
	return !start
}

// ValidateKind checks a kind's syntax.
func ValidateKind(kind string) error {
	switch {
	case kind == "":
		return &DecodeError{AttrKind, "required"}
	case len(kind) > 128 || !validKindSyntax(kind):
		return &DecodeError{AttrKind, fmt.Sprintf("%q is not a kind like email.send", truncate(kind, 64))}
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ValidateKey checks an idempotency key.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return &DecodeError{AttrKey, "required"}
	case len(key) > MaxKeyBytes:
		return &DecodeError{AttrKey, fmt.Sprintf("%d bytes exceeds %d", len(key), MaxKeyBytes)}
	}
	return checkPrintable(AttrKey, key)
}

// checkPrintable reports s (the value of field) unless it is printable UTF-8.
func checkPrintable(field, s string) error {
	switch {
	case printableASCII(s):
		return nil // the common case, without decoding runes
	case !utf8.ValidString(s):
		return &DecodeError{field, "not valid UTF-8"}
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return &DecodeError{field, "contains a control or non-printable character"}
		}
	}
	return nil
}

// ValidateNewKey is ValidateKey for a key being enqueued, which also may not start or end with a
// space: HTTP drops a header value's outer spaces, so " k" would be one key in a body and another in an
// Idempotency-Key header. (Deliveries are decoded with ValidateKey: a job enqueued before this rule, or
// by a foreign publisher, still runs.)
func ValidateNewKey(key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if key[0] == ' ' || key[len(key)-1] == ' ' {
		return &DecodeError{AttrKey, "starts or ends with a space"}
	}
	return nil
}

// NormalizePayload returns the one form pubq stores a payload in: a missing or null payload is {},
// any other is compacted. A job enqueued twice by different paths (the HTTP API, the Go client, an
// in-process EnqueueTx) or re-serialised with other whitespace is then the same payload, not a key
// conflict. An error says p is not JSON.
func NormalizePayload(p []byte) (json.RawMessage, error) {
	if len(p) == 0 || string(p) == "null" {
		return json.RawMessage("{}"), nil
	}
	var buf bytes.Buffer
	buf.Grow(len(p))
	if err := json.Compact(&buf, p); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ValidatePayload checks the payload is one JSON value within the size limit.
func ValidatePayload(p []byte) error {
	if len(p) > MaxPayloadBytes {
		return &DecodeError{"data", fmt.Sprintf("payload of %d bytes exceeds %d", len(p), MaxPayloadBytes)}
	}
	if len(bytes.TrimSpace(p)) == 0 {
		return &DecodeError{"data", "payload is empty (send {} for none)"}
	}
	if !json.Valid(p) {
		return &DecodeError{"data", "payload is not valid JSON"}
	}
	return nil
}

// Validate checks the envelope fields a producer sets.
func (j *Job) Validate() error {
	if err := ValidateKind(j.Kind); err != nil {
		return err
	}
	if err := ValidateKey(j.Key); err != nil {
		return err
	}
	if err := ValidateID(j.ID); err != nil {
		return err
	}
	return ValidatePayload(j.Payload)
}

// ValidateID checks a job id: at most 128 bytes of printable UTF-8. (Postgres refuses NUL and invalid
// UTF-8 in text: one such id from a foreign publisher would fail every claim batched with it.)
func ValidateID(id string) error {
	if len(id) > 128 {
		return &DecodeError{AttrID, "longer than 128 bytes"}
	}
	return checkPrintable(AttrID, id)
}

// Encode returns the Pub/Sub data and attributes of j after validating it.
func (j *Job) Encode() (data []byte, attrs map[string]string, err error) {
	if err := j.Validate(); err != nil {
		return nil, nil, err
	}
	data, attrs = j.Envelope()
	return data, attrs, nil
}

// Envelope returns the Pub/Sub data and attributes of j without validating it, for a caller that has
// already checked every field (Encode is the checked form).
func (j *Job) Envelope() (data []byte, attrs map[string]string) {
	attrs = make(map[string]string, len(j.Attributes)+6)
	for k, v := range j.Attributes {
		attrs[k] = v
	}
	attrs[AttrKind] = j.Kind
	attrs[AttrKey] = j.Key
	attrs[AttrVersion] = strconv.Itoa(Version)
	if j.ID != "" {
		attrs[AttrID] = j.ID
	}
	if !j.EnqueuedAt.IsZero() {
		attrs[AttrEnqueuedAt] = j.EnqueuedAt.UTC().Format(time.RFC3339Nano)
	}
	if j.Attempt > 1 {
		attrs[AttrAttempt] = strconv.Itoa(j.Attempt)
	}
	return j.Payload, attrs
}

// Decode parses a Pub/Sub message into a Job. publishTime fills EnqueuedAt when the attribute is absent.
// Every failure is a *DecodeError.
func Decode(data []byte, attrs map[string]string, publishTime time.Time) (*Job, error) {
	if v, ok := attrs[AttrVersion]; ok && v != "1" {
		return nil, &DecodeError{AttrVersion, fmt.Sprintf("unsupported version %q (this worker reads 1)", truncate(v, 16))}
	}
	j := &Job{Kind: attrs[AttrKind], Key: attrs[AttrKey], ID: attrs[AttrID], Payload: data, EnqueuedAt: publishTime, Attempt: 1}
	if err := j.Validate(); err != nil {
		return nil, err
	}
	if v, ok := attrs[AttrEnqueuedAt]; ok {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return nil, &DecodeError{AttrEnqueuedAt, fmt.Sprintf("%q is not an RFC 3339 time", truncate(v, 40))}
		}
		j.EnqueuedAt = t
	}
	if v, ok := attrs[AttrAttempt]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			return nil, &DecodeError{AttrAttempt, fmt.Sprintf("%q is not a positive attempt number", truncate(v, 16))}
		}
		j.Attempt = n
	}
	for k, v := range attrs {
		if EnvelopeAttribute(k) {
			continue
		}
		if j.Attributes == nil {
			j.Attributes = make(map[string]string, len(attrs))
		}
		j.Attributes[k] = v
	}
	return j, nil
}

// EnvelopeAttribute reports whether k is one of the envelope's attributes, which Envelope writes and
// Decode reads into Job's fields; every other attribute is the job's own (Job.Attributes).
func EnvelopeAttribute(k string) bool {
	switch k {
	case AttrKind, AttrKey, AttrVersion, AttrID, AttrEnqueuedAt, AttrAttempt:
		return true
	}
	return false
}

// TraceContextAttribute reports whether k carries a delivery's trace context (W3C or the Pub/Sub
// clients'): a message built again from a job (a retry, a dead letter, a rescue) gets its own from the
// publish, never the old one.
func TraceContextAttribute(k string) bool {
	switch k {
	case AttrTraceParent, AttrTraceState, AttrPubSubTraceParent, AttrPubSubTraceState:
		return true
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// The mark counts toward n: a limit such as Pub/Sub's attribute size must hold.
	mark := "…"
	if n < len(mark) {
		mark = ""
	}
	n -= len(mark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}

// Truncate shortens s to at most n bytes on a rune boundary, marking the cut; for error attributes.
func Truncate(s string, n int) string { return truncate(s, n) }

// DeadLetterAttributes returns orig plus the AttrDead* attributes that say why, when and after how many
// attempts a message of queue was dead-lettered. Every dead letter pubq writes (the worker's and the
// rescuer's) carries the same set, so consumers of a dead-letter topic read one format.
//
// The delivery's trace context (traceparent, googclient_traceparent and their tracestate) is left out:
// the dead letter's publish writes its own, and five attributes more must still fit Pub/Sub's 100.
func DeadLetterAttributes(orig map[string]string, queue, reason, errText string, attempts int, at time.Time) map[string]string {
	attrs := make(map[string]string, len(orig)+5)
	for k, v := range orig {
		if TraceContextAttribute(k) {
			continue
		}
		attrs[k] = v
	}
	attrs[AttrDeadReason] = reason
	attrs[AttrDeadError] = truncate(errText, 1024)
	attrs[AttrDeadAttempts] = strconv.Itoa(attempts)
	attrs[AttrDeadQueue] = queue
	attrs[AttrDeadAt] = at.UTC().Format(time.RFC3339Nano)
	// Pub/Sub takes 100 attributes, and the dead letter's publish adds its trace context (2). A message
	// from a foreign publisher may come with nearly 100: its last own attributes (by name) are left off,
	// and counted, or the dead letter could never be published.
	if limit := maxMessageAttributes - 2; len(attrs) > limit {
		var own []string
		for k := range attrs {
			if !strings.HasPrefix(k, "pubq_") {
				own = append(own, k)
			}
		}
		sort.Strings(own)
		drop := min(len(attrs)+1-limit, len(own)) // +1: the count itself
		for _, k := range own[len(own)-drop:] {
			delete(attrs, k)
		}
		attrs[AttrDeadDropped] = strconv.Itoa(drop)
	}
	return attrs
}

// maxMessageAttributes is Pub/Sub's limit of attributes on one message.
const maxMessageAttributes = 100
