package api

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/pubq/pubq/pkg/publish"
)

// Problem types. Each has one title; Detail says what happened this time.
const (
	TypeUnauthorized     = "urn:pubq:problem:unauthorized"
	TypeMalformed        = "urn:pubq:problem:malformed-json"
	TypeInvalid          = "urn:pubq:problem:invalid-field"
	TypeTooLarge         = "urn:pubq:problem:too-large"
	TypeUnknownKind      = "urn:pubq:problem:unknown-kind"
	TypeKeyConflict      = "urn:pubq:problem:key-conflict"
	TypeUnsupportedMedia = "urn:pubq:problem:unsupported-media-type"
	TypeMethod           = "urn:pubq:problem:method-not-allowed"
	TypeNotFound         = "urn:pubq:problem:not-found"
	TypeUnavailable      = "urn:pubq:problem:unavailable"
	TypeInternal         = "urn:pubq:problem:internal"
)

var titles = map[string]string{
	TypeUnauthorized:     "Missing or invalid bearer token",
	TypeMalformed:        "Malformed JSON",
	TypeInvalid:          "Invalid field",
	TypeTooLarge:         "Request too large",
	TypeUnknownKind:      "Unknown job kind",
	TypeKeyConflict:      "Idempotency key already used for a different job",
	TypeUnsupportedMedia: "Unsupported media type",
	TypeMethod:           "Method not allowed",
	TypeNotFound:         "Not found",
	TypeUnavailable:      "Service unavailable",
	TypeInternal:         "Internal error",
}

// ContentTypeProblem is the media type of every error answer (RFC 9457).
const ContentTypeProblem = "application/problem+json"

// Problem is an RFC 9457 problem detail: the body of every error answer, and the error the Client
// returns for a request the server refused.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Field names the request field at fault: kind, key, payload, run_at, run_in or jobs.
	Field string `json:"field,omitempty"`
	// Index is the position of the job at fault in a batch.
	Index *int `json:"index,omitempty"`
	// JobID is the existing job that holds a reused key (409).
	JobID string `json:"job_id,omitempty"`
}

func newProblem(typ string, status int, detail string) *Problem {
	return &Problem{Type: typ, Title: titles[typ], Status: status, Detail: detail}
}

func invalid(field, format string, args ...any) *Problem {
	p := newProblem(TypeInvalid, http.StatusBadRequest, fmt.Sprintf(format, args...))
	p.Field = field
	return p
}

// at marks p as about the job at index i of a batch.
func (p *Problem) at(i int) *Problem {
	p.Index = &i
	return p
}

func (p *Problem) Error() string {
	s := fmt.Sprintf("pubq: api: %d %s", p.Status, p.Title)
	if p.Index != nil {
		s += fmt.Sprintf(" (job %d)", *p.Index)
	}
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	return s
}

// Is lets callers of the Client test a refusal like a local enqueue's error:
// errors.Is(err, publish.ErrKeyConflict), publish.ErrUnknownKind, publish.ErrInvalid.
func (p *Problem) Is(target error) bool {
	switch target {
	case publish.ErrKeyConflict:
		return p.Type == TypeKeyConflict
	case publish.ErrUnknownKind:
		return p.Type == TypeUnknownKind
	case publish.ErrInvalid:
		return p.Type == TypeInvalid || p.Type == TypeMalformed
	case publish.ErrTooMany:
		return p.Type == TypeTooLarge && p.Field == "jobs"
	}
	return false
}

func writeProblem(w http.ResponseWriter, p *Problem) {
	h := w.Header()
	h.Set("Content-Type", ContentTypeProblem)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
