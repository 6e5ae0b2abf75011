package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/pubq/pubq/pkg/queue"
)

// Action says what Bootstrap did to one resource.
type Action struct {
	Resource string // full resource name
	Kind     string // "topic" or "subscription"
	Did      string // "created", "exists", "updated"
}

// Bootstrap creates every queue's topics and subscriptions in project, idempotently.
func Bootstrap(ctx context.Context, client *pubsub.Client, project string, cfg *queue.Config) ([]Action, error) {
	if project == "" {
		return nil, errors.New("pubq: bootstrap: project is required")
	}
	var out []Action
	for i := range cfg.Queues {
		q := &cfg.Queues[i]
		for _, t := range []string{q.Topic, q.DeadLetterTopic} {
			a, err := ensureTopic(ctx, client, TopicName(project, t), q)
			if err != nil {
				return out, fmt.Errorf("pubq: bootstrap queue %q: %w", q.Name, err)
			}
			out = append(out, a)
		}
		for _, s := range []*pubsubpb.Subscription{WorkerSubscription(project, q), DeadLetterSubscription(project, q)} {
			a, err := ensureSubscription(ctx, client, s)
			if err != nil {
				return out, fmt.Errorf("pubq: bootstrap queue %q: %w", q.Name, err)
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// TopicName is the full resource name of a topic.
func TopicName(project, id string) string { return "projects/" + project + "/topics/" + id }

// SubscriptionName is the full resource name of a subscription.
func SubscriptionName(project, id string) string {
	return "projects/" + project + "/subscriptions/" + id
}

// WorkerSubscription is the subscription the worker receives q from, as the config describes it.
// Pub/Sub's own retry and dead-letter policies are the backstop for messages pubq never acks (a crash
// loop, a database outage); pubq's retries and dead letters go through its outbox.
func WorkerSubscription(project string, q *queue.Queue) *pubsubpb.Subscription {
	minB := clamp(q.Backoff.Initial, 0, 600*time.Second)
	maxB := clamp(q.Backoff.Max, minB, 600*time.Second)
	return &pubsubpb.Subscription{
		Name:                      SubscriptionName(project, q.Subscription),
		Topic:                     TopicName(project, q.Topic),
		AckDeadlineSeconds:        int32(q.AckDeadline / time.Second),
		MessageRetentionDuration:  durationpb.New(q.MessageRetention),
		EnableExactlyOnceDelivery: q.ExactlyOnce,
		RetryPolicy:               &pubsubpb.RetryPolicy{MinimumBackoff: durationpb.New(minB), MaximumBackoff: durationpb.New(maxB)},
		DeadLetterPolicy: &pubsubpb.DeadLetterPolicy{
			DeadLetterTopic:     TopicName(project, q.DeadLetterTopic),
			MaxDeliveryAttempts: int32(q.MaxDeliveryAttempts),
		},
		Labels: map[string]string{"pubq-queue": q.Name},
	}
}

// DeadLetterSubscription keeps q's dead letters for inspection (a topic without subscriptions drops them).
func DeadLetterSubscription(project string, q *queue.Queue) *pubsubpb.Subscription {
	return &pubsubpb.Subscription{
		Name:                     SubscriptionName(project, q.DeadLetterSubscription),
		Topic:                    TopicName(project, q.DeadLetterTopic),
		AckDeadlineSeconds:       60,
		MessageRetentionDuration: durationpb.New(q.MessageRetention),
		Labels:                   map[string]string{"pubq-queue": q.Name, "pubq-role": "dead-letter"},
	}
}

func clamp(d, lo, hi time.Duration) time.Duration { return max(lo, min(d, hi)) }

func ensureTopic(ctx context.Context, client *pubsub.Client, name string, q *queue.Queue) (Action, error) {
	a := Action{Resource: name, Kind: "topic", Did: "created"}
	_, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: name, Labels: map[string]string{"pubq-queue": q.Name}})
	if status.Code(err) == codes.AlreadyExists {
		a.Did = "exists"
		return a, nil
	}
	if err != nil {
		return a, fmt.Errorf("creating topic %s: %w", name, err)
	}
	return a, nil
}

func ensureSubscription(ctx context.Context, client *pubsub.Client, want *pubsubpb.Subscription) (Action, error) {
	a := Action{Resource: want.Name, Kind: "subscription", Did: "created"}
	_, err := client.SubscriptionAdminClient.CreateSubscription(ctx, want)
	if err == nil {
		return a, nil
	}
	if status.Code(err) != codes.AlreadyExists {
		return a, fmt.Errorf("creating subscription %s: %w", want.Name, err)
	}
	have, err := client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: want.Name})
	if err != nil {
		return a, fmt.Errorf("reading subscription %s: %w", want.Name, err)
	}
	if have.Topic != want.Topic {
		return a, fmt.Errorf("subscription %s is attached to %s, not %s: delete it or rename the queue's subscription", want.Name, have.Topic, want.Topic)
	}
	paths := drift(have, want)
	if len(paths) == 0 {
		a.Did = "exists"
		return a, nil
	}
	if _, err := client.SubscriptionAdminClient.UpdateSubscription(ctx, &pubsubpb.UpdateSubscriptionRequest{
		Subscription: want, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths},
	}); err != nil {
		return a, fmt.Errorf("updating subscription %s (%v): %w", want.Name, paths, err)
	}
	a.Did = "updated"
	return a, nil
}

// drift lists the update-mask paths where have differs from want.
func drift(have, want *pubsubpb.Subscription) []string {
	var paths []string
	if have.AckDeadlineSeconds != want.AckDeadlineSeconds {
		paths = append(paths, "ack_deadline_seconds")
	}
	if want.MessageRetentionDuration != nil && have.GetMessageRetentionDuration().AsDuration() != want.MessageRetentionDuration.AsDuration() {
		paths = append(paths, "message_retention_duration")
	}
	if have.GetDeadLetterPolicy().GetDeadLetterTopic() != want.GetDeadLetterPolicy().GetDeadLetterTopic() ||
		have.GetDeadLetterPolicy().GetMaxDeliveryAttempts() != want.GetDeadLetterPolicy().GetMaxDeliveryAttempts() {
		paths = append(paths, "dead_letter_policy")
	}
	if want.RetryPolicy != nil && (have.GetRetryPolicy().GetMinimumBackoff().AsDuration() != want.RetryPolicy.MinimumBackoff.AsDuration() ||
		have.GetRetryPolicy().GetMaximumBackoff().AsDuration() != want.RetryPolicy.MaximumBackoff.AsDuration()) {
		paths = append(paths, "retry_policy")
	}
	if have.EnableExactlyOnceDelivery != want.EnableExactlyOnceDelivery {
		paths = append(paths, "enable_exactly_once_delivery")
	}
	return paths
}
