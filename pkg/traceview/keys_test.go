package traceview

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/pubq/pubq/pkg/telemetry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The attribute keys traceview searches and prints are the ones telemetry writes.
func TestKeysMatchTelemetry(t *testing.T) {
	for got, want := range map[string]string{
		attrJobQueue:   string(telemetry.AttrJobQueue),
		attrJobKind:    string(telemetry.AttrJobKind),
		attrJobKey:     string(telemetry.AttrJobKey),
		attrJobID:      string(telemetry.AttrJobID),
		attrJobAttempt: string(telemetry.AttrJobAttempt),
	} {
		if got != want {
			t.Errorf("traceview uses %q, telemetry writes %q", got, want)
		}
	}
	if string(telemetry.AttrMessagingMessageID) != DefaultAttributes[4] {
		t.Errorf("message id key drifted: %q vs %q", telemetry.AttrMessagingMessageID, DefaultAttributes[4])
	}
}
