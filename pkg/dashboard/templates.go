package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/url"
	"strings"
	"time"
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
		"trunc": trunc,
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

// human prints a duration the way on-call reads it: 3s, 4m10s, 2h5m, 3d4h.
func human(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return strings.TrimSuffix(d.Round(time.Second).String(), "0s")
	case d < 48*time.Hour:
		s := strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return s
	}
	days := d / (24 * time.Hour)
	return fmt.Sprintf("%dd%dh", days, (d-days*24*time.Hour)/time.Hour)
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n] + "…"
}
