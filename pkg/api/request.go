package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/pubq/pubq/pkg/job"
	"github.com/pubq/pubq/pkg/publish"
)

// jobJSON is one job on the wire, shared by the server and the Client.
type jobJSON struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
	RunAt   *string         `json:"run_at,omitempty"`
	RunIn   *string         `json:"run_in,omitempty"`
}

type batchJSON struct {
	Jobs []jobJSON `json:"jobs"`
}

type batchResultJSON struct {
	Jobs []publish.Result `json:"jobs"`
}

// jobFields are the fields a single-job body may have; anything else is refused so a typo ("runat")
// is an error rather than a job that silently runs now.
var jobFields = map[string]bool{"kind": true, "key": true, "payload": true, "run_at": true, "run_in": true}

// decodeBody parses a request body into requests. headerKey is the Idempotency-Key header ("" if absent).
func decodeBody(data []byte, headerKey string) ([]publish.Request, bool, *Problem) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, false, newProblem(TypeMalformed, http.StatusBadRequest, "the body is empty; send a JSON object")
	}
	if data[0] != '{' {
		return nil, false, newProblem(TypeMalformed, http.StatusBadRequest, "the body must be a JSON object")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, false, malformed(err)
	}
	rawJobs, batch := top["jobs"]
	if !batch {
		for name := range top {
			if !jobFields[name] {
				return nil, false, invalid(name, "unknown field %q (a job has kind, key, payload, run_at, run_in)", name)
			}
		}
		r, p := decodeJob(data, headerKey, false)
		if p != nil {
			return nil, false, p
		}
		return []publish.Request{r}, false, nil
	}
	for name := range top {
		if name != "jobs" {
			return nil, true, invalid(name, "a batch body has only \"jobs\"; put %q in each job", name)
		}
	}
	if headerKey != "" {
		return nil, true, invalid("key", "the Idempotency-Key header names one job; in a batch give each job its own \"key\"")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(rawJobs, &items); err != nil || items == nil {
		return nil, true, invalid("jobs", "\"jobs\" must be an array of job objects")
	}
	if len(items) == 0 {
		return nil, true, invalid("jobs", "\"jobs\" is empty")
	}
	if len(items) > publish.MaxBatch {
		p := newProblem(TypeTooLarge, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("%d jobs in one batch; at most %d", len(items), publish.MaxBatch))
		p.Field = "jobs"
		return nil, true, p
	}
	reqs := make([]publish.Request, len(items))
	seen := make(map[string]int, len(items))
	for i, raw := range items {
		r, p := decodeJob(raw, "", true)
		if p != nil {
			return nil, true, p.at(i)
		}
		if j, dup := seen[r.Key]; dup {
			return nil, true, invalid("key", "key %q is also the key of job %d; each job in a batch needs its own key", r.Key, j).at(i)
		}
		seen[r.Key] = i
		reqs[i] = r
	}
	return reqs, true, nil
}

func malformed(err error) *Problem {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return newProblem(TypeMalformed, http.StatusBadRequest, fmt.Sprintf("invalid JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: ")))
	}
	return newProblem(TypeMalformed, http.StatusBadRequest, strings.TrimPrefix(err.Error(), "json: "))
}

// decodeJob parses and checks one job object. Validation that needs the queue config (kind routing,
// kind syntax) is left to publish.Client.Prepare.
func decodeJob(raw []byte, headerKey string, inBatch bool) (publish.Request, *Problem) {
	var j jobJSON
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field == "":
			return publish.Request{}, invalid("jobs", "a job must be a JSON object, not %s", te.Value)
		case errors.As(err, &te):
			// payload takes any JSON value, so only the string fields get here.
			return publish.Request{}, invalid(te.Field, "%q must be a JSON string, not %s", te.Field, te.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return publish.Request{}, invalid(name, "unknown field %q (a job has kind, key, payload, run_at, run_in)", name)
		default:
			return publish.Request{}, malformed(err)
		}
	}
	r := publish.Request{Kind: j.Kind, Key: j.Key}
	if j.Kind == "" {
		return r, invalid("kind", "\"kind\" is required")
	}
	switch {
	case headerKey != "" && j.Key != "" && headerKey != j.Key:
		return r, invalid("key", "the Idempotency-Key header and the \"key\" field differ")
	case headerKey != "":
		r.Key = headerKey
	}
	if r.Key == "" {
		if inBatch {
			return r, invalid("key", "\"key\" is required: each job in a batch needs its own idempotency key")
		}
		return r, invalid("key", "an idempotency key is required: send the Idempotency-Key header or the \"key\" field")
	}
	if err := job.ValidateNewKey(r.Key); err != nil {
		return r, fromDecodeError(err)
	}
	payload, p := normalizePayload(j.Payload)
	if p != nil {
		return r, p
	}
	r.Payload = payload
	if j.RunAt != nil && j.RunIn != nil {
		return r, invalid("run_in", "set \"run_at\" or \"run_in\", not both")
	}
	if j.RunAt != nil {
		t, err := time.Parse(time.RFC3339, *j.RunAt)
		if err != nil {
			return r, invalid("run_at", "%q is not an RFC 3339 time like 2026-01-02T15:04:05Z", truncate(*j.RunAt, 64))
		}
		r.RunAt = t
	}
	if j.RunIn != nil {
		d, err := time.ParseDuration(*j.RunIn)
		if err != nil || d <= 0 {
			return r, invalid("run_in", "%q is not a positive duration like 30s or 5m", truncate(*j.RunIn, 64))
		}
		r.RunIn = d
	}
	return r, nil
}

// normalizePayload is job.NormalizePayload with the API's answers: a 400 for JSON that is not, a 413
// for a payload over the limit once compacted.
func normalizePayload(raw json.RawMessage) (json.RawMessage, *Problem) {
	norm, err := job.NormalizePayload(raw)
	if err != nil {
		return nil, invalid("payload", "the payload is not valid JSON")
	}
	if len(norm) > job.MaxPayloadBytes {
		p := newProblem(TypeTooLarge, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("the payload is %d bytes; at most %d", len(norm), job.MaxPayloadBytes))
		p.Field = "payload"
		return nil, p
	}
	return norm, nil
}

// fromDecodeError maps the job package's wire-level field names to the API's.
func fromDecodeError(err error) *Problem {
	var de *job.DecodeError
	if !errors.As(err, &de) {
		return invalid("", "%s", strings.TrimPrefix(err.Error(), "pubq: "))
	}
	field := de.Field
	switch field {
	case job.AttrKind:
		field = "kind"
	case job.AttrKey:
		field = "key"
	case "data":
		field = "payload"
	}
	return invalid(field, "%q: %s", field, de.Reason)
}

func truncate(s string, n int) string { return job.Truncate(s, n) }
