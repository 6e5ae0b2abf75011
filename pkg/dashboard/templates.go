package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/url"
	"time"

	"github.com/pubq/pubq/pkg/inspect"
	"github.com/pubq/pubq/pkg/job"
)

func jsonIndent(w io.Writer, raw []byte) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return err
	}
	_, err := b.WriteTo(w)
	return err
}

// pageNames are the pages; each is parsed together with the layout.
var pageNames = []string{"login", "overview", "jobs", "job", "confirm", "error"}

func (h *handler) parseTemplates() map[string]*template.Template {
	funcs := template.FuncMap{
		"path": h.path,
		"jobURL": func(key string) string {
			return h.path("/job?" + url.Values{"key": {key}}.Encode())
		},
		"listURL": func(p string, kv ...string) string {
			v := url.Values{}
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] != "" {
					v.Set(kv[i], kv[i+1])
				}
			}
			if len(v) == 0 {
				return h.path(p)
			}
			return h.path(p + "?" + v.Encode())
		},
		"traceURL": func(id string) string {
			if id == "" {
				return ""
			}
			return h.cfg.TraceURL(id)
		},
		"ts": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"ago": func(t, now time.Time) string {
			if t.IsZero() {
				return ""
			}
			d := now.Sub(t)
			if d < 0 {
				return "in " + human(-d)
			}
			return human(d) + " ago"
		},
		"dur":   human,
		"trunc": job.Truncate,
		"rate": func(f float64) string {
			if f > 0 && f < 10 {
				return fmt.Sprintf("%.2f", f)
			}
			return fmt.Sprintf("%.0f", f)
		},
		"json": func(raw json.RawMessage) string { return string(raw) },
		"get":  func(m map[string]int64, k string) int64 { return m[k] },
	}
	out := map[string]*template.Template{}
	for _, p := range pageNames {
		out[p] = template.Must(template.New(p).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html"))
	}
	return out
}

// human is inspect.HumanDuration, shared with the other on-call face.
var human = inspect.HumanDuration
