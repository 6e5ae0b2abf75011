package job_test

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/pubq/pubq/pkg/job"
)

// A job travels as JSON data plus pubq_* attributes; any Pub/Sub client can publish one.
func ExampleJob_Encode() {
	j := &job.Job{Kind: "email.send", Key: "welcome-email:student-42", Payload: []byte(`{"to":"ada@example.org"}`)}
	data, attrs, err := j.Encode()
	if err != nil {
		panic(err)
	}
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Println(string(data))
	for _, k := range keys {
		fmt.Printf("%s=%s\n", k, attrs[k])
	}
	// Output:
	// {"to":"ada@example.org"}
	// pubq_key=welcome-email:student-42
	// pubq_kind=email.send
	// pubq_version=1
}

func ExampleDecode() {
	_, err := job.Decode([]byte(`{"to":"x"}`), map[string]string{"pubq_kind": "email.send"}, time.Now())
	var de *job.DecodeError
	fmt.Println(errors.As(err, &de), de.Field)
	fmt.Println(err)
	// Output:
	// true pubq_key
	// pubq: invalid job: pubq_key: required
}

// A handler chooses the outcome with its error.
func ExampleClassify() {
	for _, err := range []error{nil, errors.New("smtp: 451"), job.Snooze(time.Minute), job.Permanent(errors.New("no such user"))} {
		o, d := job.Classify(err)
		fmt.Println(o, d)
	}
	// Output:
	// succeeded 0s
	// retry 0s
	// snooze 1m0s
	// permanent 0s
}
