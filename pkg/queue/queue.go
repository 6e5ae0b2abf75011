package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pubq/pubq/pkg/job"
)

// ErrUnknownKind is returned by Route for a kind no queue accepts.
var ErrUnknownKind = errors.New("pubq: unknown job kind")

// Backoff is the jittered exponential backoff between attempts of one job.
type Backoff struct {
	Initial       time.Duration // first retry delay; default 1s
	Multiplier    float64       // growth per attempt; default 2
	Max           time.Duration // cap on one delay; default 10m
	Randomization float64       // jitter: each delay is drawn from [d*(1-r), d*(1+r)]; default 0.5
	MaxAttempts   int           // attempts in all, including the first; default 10
}

// KindOverride changes a queue's settings for one job kind.
type KindOverride struct {
	Timeout time.Duration // zero: the queue's
	Backoff Backoff       // zero fields: the queue's
}

// Queue is one queue with every default applied.
type Queue struct {
	Name                   string
	Topic                  string
	Subscription           string
	DeadLetterTopic        string
	DeadLetterSubscription string
	AckDeadline            time.Duration
	MaxDeliveryAttempts    int
	MessageRetention       time.Duration
	KeyRetention           time.Duration
	ExactlyOnce            bool
	Concurrency            int
	DBConns                int     // connections for this queue's transactional handlers (its own pool)
	MaxRate                float64 // jobs started per second per worker process; 0: no limit
	Streams                int
	Timeout                time.Duration
	Backoff                Backoff
	Kinds                  []string
	KindOverrides          map[string]KindOverride
}

// Schedule is a cron schedule that enqueues one job per tick.
type Schedule struct {
	Name    string
	Cron    string
	Kind    string
	Payload []byte // JSON; "{}" when absent
}

// Config is a parsed, validated queue configuration.
type Config struct {
	Version   int
	Queues    []Queue // sorted by name
	Schedules []Schedule
	byKind    map[string]int
}

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pubq: reading queue config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Queue returns the queue with the given name.
func (c *Config) Queue(name string) (*Queue, bool) {
	for i := range c.Queues {
		if c.Queues[i].Name == name {
			return &c.Queues[i], true
		}
	}
	return nil, false
}

// Route returns the queue that accepts kind.
func (c *Config) Route(kind string) (*Queue, error) {
	i, ok := c.byKind[kind]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKind, kind)
	}
	return &c.Queues[i], nil
}

// BackoffFor returns the backoff for kind: the queue's, with the kind's override applied.
func (q *Queue) BackoffFor(kind string) Backoff {
	b := q.Backoff
	if o, ok := q.KindOverrides[kind]; ok {
		mergeBackoff(&b, o.Backoff)
	}
	return b
}

// TimeoutFor returns the handler timeout for kind.
func (q *Queue) TimeoutFor(kind string) time.Duration {
	if o, ok := q.KindOverrides[kind]; ok && o.Timeout > 0 {
		return o.Timeout
	}
	return q.Timeout
}

// The file's shape. Pointers tell "absent" from zero so that defaults apply only to absent fields.
type fileBackoff struct {
	Initial       *duration `yaml:"initial"`
	Multiplier    *float64  `yaml:"multiplier"`
	Max           *duration `yaml:"max"`
	Randomization *float64  `yaml:"randomization"`
	MaxAttempts   *int      `yaml:"max_attempts"`
}

type fileQueue struct {
	Topic                  string                  `yaml:"topic"`
	Subscription           string                  `yaml:"subscription"`
	DeadLetterTopic        string                  `yaml:"dead_letter_topic"`
	DeadLetterSubscription string                  `yaml:"dead_letter_subscription"`
	AckDeadline            *duration               `yaml:"ack_deadline"`
	MaxDeliveryAttempts    *int                    `yaml:"max_delivery_attempts"`
	MessageRetention       *duration               `yaml:"message_retention"`
	KeyRetention           *duration               `yaml:"key_retention"`
	ExactlyOnce            *bool                   `yaml:"exactly_once"`
	Concurrency            *int                    `yaml:"concurrency"`
	DBConns                *int                    `yaml:"db_conns"`
	MaxRate                *float64                `yaml:"max_rate"`
	Streams                *int                    `yaml:"streams"`
	Timeout                *duration               `yaml:"timeout"`
	Backoff                fileBackoff             `yaml:"backoff"`
	Kinds                  []string                `yaml:"kinds"`
	KindOverrides          map[string]fileOverride `yaml:"kind_overrides"`
}

type fileOverride struct {
	Timeout *duration   `yaml:"timeout"`
	Backoff fileBackoff `yaml:"backoff"`
}

type fileSchedule struct {
	Cron    string    `yaml:"cron"`
	Kind    string    `yaml:"kind"`
	Payload yaml.Node `yaml:"payload"`
}

type file struct {
	Version   int                     `yaml:"version"`
	Defaults  fileQueue               `yaml:"defaults"`
	Queues    map[string]fileQueue    `yaml:"queues"`
	Schedules map[string]fileSchedule `yaml:"schedules"`
}

type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 30s or 10m", n.Line, n.Value)
	}
	*d = duration(v)
	return nil
}

// builtin holds the defaults used when neither the queue nor the file's defaults set a field.
var builtin = Queue{
	AckDeadline:         60 * time.Second,
	MaxDeliveryAttempts: 20,
	MessageRetention:    7 * 24 * time.Hour,
	KeyRetention:        8 * 24 * time.Hour,
	Concurrency:         64,
	Streams:             4,
	Timeout:             5 * time.Minute,
	Backoff: Backoff{
		Initial: time.Second, Multiplier: 2, Max: 10 * time.Minute, Randomization: 0.5, MaxAttempts: 10,
	},
}

// Parse parses and validates a queue configuration.
func Parse(data []byte) (*Config, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a misspelt field is an error, not a silent default
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("pubq: queue config: %w", err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("pubq: queue config: version: must be 1, got %d", f.Version)
	}
	if len(f.Queues) == 0 {
		return nil, errors.New("pubq: queue config: queues: at least one queue is required")
	}
	defaults := apply(builtin, f.Defaults)
	if err := validateDefaults(f.Defaults); err != nil {
		return nil, err
	}
	cfg := &Config{Version: f.Version, byKind: map[string]int{}}
	names := make([]string, 0, len(f.Queues))
	for name := range f.Queues {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fq := f.Queues[name]
		q := apply(defaults, fq)
		q.Name = name
		if q.DBConns == 0 {
			q.DBConns = min(q.Concurrency, 16) // default: enough for most handlers to hold a transaction
		}
		q.Topic, q.Subscription = fq.Topic, fq.Subscription
		q.DeadLetterTopic, q.DeadLetterSubscription = fq.DeadLetterTopic, fq.DeadLetterSubscription
		q.Kinds = fq.Kinds
		q.KindOverrides = map[string]KindOverride{}
		for kind, fo := range fq.KindOverrides {
			o := KindOverride{Backoff: backoffFromFile(Backoff{}, fo.Backoff)}
			if fo.Timeout != nil {
				o.Timeout = time.Duration(*fo.Timeout)
			}
			q.KindOverrides[kind] = o
		}
		if err := q.validate(); err != nil {
			return nil, err
		}
		cfg.Queues = append(cfg.Queues, q)
	}
	if err := cfg.checkResources(); err != nil {
		return nil, err
	}
	for i, q := range cfg.Queues {
		for _, kind := range q.Kinds {
			if j, dup := cfg.byKind[kind]; dup {
				return nil, fmt.Errorf("pubq: queue %q: kinds: %q is already routed to queue %q", q.Name, kind, cfg.Queues[j].Name)
			}
			cfg.byKind[kind] = i
		}
	}
	snames := make([]string, 0, len(f.Schedules))
	for name := range f.Schedules {
		snames = append(snames, name)
	}
	sort.Strings(snames)
	for _, name := range snames {
		fs := f.Schedules[name]
		s, err := parseSchedule(name, fs)
		if err != nil {
			return nil, err
		}
		if _, ok := cfg.byKind[s.Kind]; !ok {
			return nil, fmt.Errorf("pubq: schedule %q: kind: %q is not routed to any queue", name, s.Kind)
		}
		cfg.Schedules = append(cfg.Schedules, s)
	}
	return cfg, nil
}

func parseSchedule(name string, fs fileSchedule) (Schedule, error) {
	s := Schedule{Name: name, Cron: strings.TrimSpace(fs.Cron), Kind: fs.Kind, Payload: []byte("{}")}
	if s.Cron == "" {
		return s, fmt.Errorf("pubq: schedule %q: cron: required", name)
	}
	if len(strings.Fields(s.Cron)) != 5 && !strings.HasPrefix(s.Cron, "@") {
		return s, fmt.Errorf("pubq: schedule %q: cron: %q must have 5 fields (minute hour day month weekday)", name, s.Cron)
	}
	if s.Kind == "" {
		return s, fmt.Errorf("pubq: schedule %q: kind: required", name)
	}
	if fs.Payload.Kind != 0 {
		var v any
		if err := fs.Payload.Decode(&v); err != nil {
			return s, fmt.Errorf("pubq: schedule %q: payload: %w", name, err)
		}
		if _, ok := v.(map[string]any); !ok {
			return s, fmt.Errorf("pubq: schedule %q: payload: must be a mapping", name)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return s, fmt.Errorf("pubq: schedule %q: payload: %w", name, err)
		}
		s.Payload = b
	}
	return s, nil
}

func apply(base Queue, f fileQueue) Queue {
	q := base
	setDur(&q.AckDeadline, f.AckDeadline)
	setDur(&q.MessageRetention, f.MessageRetention)
	setDur(&q.KeyRetention, f.KeyRetention)
	setDur(&q.Timeout, f.Timeout)
	setInt(&q.MaxDeliveryAttempts, f.MaxDeliveryAttempts)
	setInt(&q.Concurrency, f.Concurrency)
	setInt(&q.DBConns, f.DBConns)
	if f.MaxRate != nil {
		q.MaxRate = *f.MaxRate
	}
	setInt(&q.Streams, f.Streams)
	if f.ExactlyOnce != nil {
		q.ExactlyOnce = *f.ExactlyOnce
	}
	q.Backoff = backoffFromFile(base.Backoff, f.Backoff)
	return q
}

func backoffFromFile(b Backoff, f fileBackoff) Backoff {
	setDur(&b.Initial, f.Initial)
	setDur(&b.Max, f.Max)
	setInt(&b.MaxAttempts, f.MaxAttempts)
	if f.Multiplier != nil {
		b.Multiplier = *f.Multiplier
	}
	if f.Randomization != nil {
		b.Randomization = *f.Randomization
	}
	return b
}

// mergeBackoff copies o's non-zero fields into b.
func mergeBackoff(b *Backoff, o Backoff) {
	if o.Initial > 0 {
		b.Initial = o.Initial
	}
	if o.Multiplier > 0 {
		b.Multiplier = o.Multiplier
	}
	if o.Max > 0 {
		b.Max = o.Max
	}
	if o.Randomization > 0 {
		b.Randomization = o.Randomization
	}
	if o.MaxAttempts > 0 {
		b.MaxAttempts = o.MaxAttempts
	}
}

func setDur(dst *time.Duration, v *duration) {
	if v != nil {
		*dst = time.Duration(*v)
	}
}

func setInt(dst *int, v *int) {
	if v != nil {
		*dst = *v
	}
}

func validateDefaults(f fileQueue) error {
	if f.Topic != "" || f.Subscription != "" || f.DeadLetterTopic != "" || f.DeadLetterSubscription != "" || len(f.Kinds) > 0 {
		return errors.New("pubq: queue config: defaults: topic, subscription, dead-letter names and kinds belong to a queue, not to defaults")
	}
	return nil
}

// resourceID is Pub/Sub's rule for topic and subscription ids.
var resourceID = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$`)

var queueName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

func (q *Queue) validate() error {
	fail := func(field, format string, args ...any) error {
		return fmt.Errorf("pubq: queue %q: %s: %s", q.Name, field, fmt.Sprintf(format, args...))
	}
	if !queueName.MatchString(q.Name) {
		return fail("name", "must be lower-case letters, digits, - or _, starting with a letter")
	}
	for _, r := range q.resources() { // a fixed order, so the same file always gives the same error
		field, id := r.field, r.id
		if id == "" {
			return fail(field, "required")
		}
		if !resourceID.MatchString(id) || strings.HasPrefix(strings.ToLower(id), "goog") {
			return fail(field, "%q is not a valid Pub/Sub id (3-255 chars, starts with a letter, not goog)", id)
		}
	}
	if q.Topic == q.DeadLetterTopic {
		return fail("dead_letter_topic", "must differ from topic")
	}
	if q.AckDeadline < 10*time.Second || q.AckDeadline > 600*time.Second {
		return fail("ack_deadline", "%s is outside Pub/Sub's 10s..600s", q.AckDeadline)
	}
	if q.MaxDeliveryAttempts < 5 || q.MaxDeliveryAttempts > 100 {
		return fail("max_delivery_attempts", "%d is outside Pub/Sub's 5..100", q.MaxDeliveryAttempts)
	}
	if q.MessageRetention < 10*time.Minute || q.MessageRetention > 31*24*time.Hour {
		return fail("message_retention", "%s is outside Pub/Sub's 10m..744h", q.MessageRetention)
	}
	if q.KeyRetention <= q.MessageRetention {
		return fail("key_retention", "%s must exceed message_retention %s, or a redelivered message could run twice", q.KeyRetention, q.MessageRetention)
	}
	if q.Concurrency < 1 || q.Concurrency > 10000 {
		return fail("concurrency", "%d must be 1..10000", q.Concurrency)
	}
	if q.MaxRate < 0 {
		return fail("max_rate", "%g must not be negative (0: no limit)", q.MaxRate)
	}
	if q.DBConns < 1 || q.DBConns > 1000 {
		return fail("db_conns", "%d must be 1..1000", q.DBConns)
	}
	if q.Streams < 1 || q.Streams > 256 {
		return fail("streams", "%d must be 1..256", q.Streams)
	}
	if q.Timeout <= 0 {
		return fail("timeout", "must be positive")
	}
	if err := validateBackoff(q.Backoff); err != nil {
		return fail("backoff", "%v", err)
	}
	if len(q.Kinds) == 0 {
		return fail("kinds", "at least one job kind is required")
	}
	seen := map[string]bool{}
	for _, k := range q.Kinds {
		// The wire format's own check: a kind the queue accepts must be one a job can carry.
		if job.ValidateKind(k) != nil {
			return fail("kinds", "%q is not a kind name like email.send (at most 128 bytes)", job.Truncate(k, 64))
		}
		if seen[k] {
			return fail("kinds", "%q is listed twice", k)
		}
		seen[k] = true
	}
	for kind, o := range q.KindOverrides {
		if !seen[kind] {
			return fail("kind_overrides", "%q is not one of this queue's kinds", kind)
		}
		b := q.Backoff
		mergeBackoff(&b, o.Backoff)
		if err := validateBackoff(b); err != nil {
			return fail("kind_overrides."+kind+".backoff", "%v", err)
		}
		if o.Timeout < 0 {
			return fail("kind_overrides."+kind+".timeout", "must be positive")
		}
	}
	return nil
}

func validateBackoff(b Backoff) error {
	switch {
	case b.Initial <= 0:
		return errors.New("initial must be positive")
	case b.Multiplier < 1:
		return fmt.Errorf("multiplier %g must be at least 1", b.Multiplier)
	case b.Max < b.Initial:
		return fmt.Errorf("max %s must be at least initial %s", b.Max, b.Initial)
	case b.Randomization < 0 || b.Randomization >= 1:
		return fmt.Errorf("randomization %g must be in [0, 1)", b.Randomization)
	case b.MaxAttempts < 1 || b.MaxAttempts > 1000:
		return fmt.Errorf("max_attempts %d must be 1..1000", b.MaxAttempts)
	}
	return nil
}

type resource struct{ field, id string }

// resources lists q's Pub/Sub resource ids with their config field names, in file order.
func (q *Queue) resources() []resource {
	return []resource{{"topic", q.Topic}, {"subscription", q.Subscription},
		{"dead_letter_topic", q.DeadLetterTopic}, {"dead_letter_subscription", q.DeadLetterSubscription}}
}

// checkResources rejects two queues sharing a Pub/Sub resource: queues are kept apart.
func (c *Config) checkResources() error {
	owner := map[string]string{}
	for _, q := range c.Queues {
		for _, r := range q.resources() {
			field, id := r.field, r.id
			kind := "topic "
			if strings.HasSuffix(field, "subscription") {
				kind = "subscription "
			}
			if other, ok := owner[kind+id]; ok && other != q.Name {
				return fmt.Errorf("pubq: queue %q: %s: %q is already used by queue %q", q.Name, field, id, other)
			}
			owner[kind+id] = q.Name
		}
	}
	return nil
}
