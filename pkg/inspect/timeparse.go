package inspect

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseTime reads a point in time as operators type it, for --since/--until and the dashboard's
// filters: RFC 3339 ("2026-11-25T14:00:00Z"), a date or a date and minute in UTC ("2026-11-25",
// "2026-11-25T14:00", "2026-11-25 14:00"), or an age before now ("90m", "2h", "7d"). "" is the zero time.
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02 15:04:05"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%w: %q is not a time (2026-11-25, 2026-11-25T14:00, RFC 3339) or an age (90m, 2h, 7d)", ErrInvalidFilter, s)
}
