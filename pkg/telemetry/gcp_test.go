package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestLogProject(t *testing.T) {
	var asked int
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked++
		if r.URL.Path != "/computeMetadata/v1/project/project-id" || r.Header.Get("Metadata-Flavor") != "Google" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Metadata-Flavor", "Google")
		fmt.Fprint(w, "proj-meta")
	}))
	defer meta.Close()
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(meta.URL, "http://"))
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{env: map[string]string{}, want: ""}, // off Google Cloud: plain JSON, nothing asked
		{env: map[string]string{"PUBQ_GCP_LOG_PROJECT": "proj-set", "K_SERVICE": "w"}, want: "proj-set"},
		{env: map[string]string{"PUBQ_GCP_LOG_PROJECT": "proj-set"}, want: "proj-set"},
		{env: map[string]string{"K_SERVICE": "w", "GOOGLE_CLOUD_PROJECT": "proj-env"}, want: "proj-env"},
		{env: map[string]string{"CLOUD_RUN_JOB": "j"}, want: "proj-meta"},
		{env: map[string]string{"GOOGLE_CLOUD_PROJECT": "proj-env"}, want: ""}, // a developer's shell off GCP
	} {
		before := asked
		got := LogProject(context.Background(), func(k string) string { return tc.env[k] })
		if got != tc.want {
			t.Errorf("LogProject(%v) = %q, want %q", tc.env, got, tc.want)
		}
		if tc.want != "proj-meta" && asked != before {
			t.Errorf("LogProject(%v) asked the metadata server", tc.env)
		}
	}
	meta.Close() // unreachable metadata server: plain JSON, not a hang
	if got := LogProject(context.Background(), func(k string) string { return map[string]string{"K_SERVICE": "w"}[k] }); got != "" {
		t.Errorf("without a metadata server: %q", got)
	}
}
