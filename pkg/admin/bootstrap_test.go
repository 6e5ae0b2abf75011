package admin_test

import (
	"context"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/pubq/pubq/pkg/admin"
	"github.com/pubq/pubq/pkg/queue"
	"github.com/pubq/pubq/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestBootstrapIdempotentAndCorrectsDrift(t *testing.T) {
	testenv.Emulator(t)
	ctx := context.Background()
	project := testenv.ProjectID(t)
	client, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cfg, err := queue.Load(testenv.RepoRoot(t) + "/queues.yaml")
	if err != nil {
		t.Fatal(err)
	}
	first, err := admin.Bootstrap(ctx, client, project, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 4*len(cfg.Queues) {
		t.Fatalf("%d resources, want 4 per queue", len(first))
	}
	for _, a := range first {
		if a.Did != "created" {
			t.Fatalf("first run: %+v", a)
		}
	}
	// The worker subscription carries the config's settings.
	crit, _ := cfg.Queue("critical")
	sub, err := client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: admin.SubscriptionName(project, crit.Subscription)})
	if err != nil {
		t.Fatal(err)
	}
	if sub.AckDeadlineSeconds != 30 || sub.GetDeadLetterPolicy().GetDeadLetterTopic() != admin.TopicName(project, crit.DeadLetterTopic) ||
		sub.GetDeadLetterPolicy().GetMaxDeliveryAttempts() != int32(crit.MaxDeliveryAttempts) ||
		sub.GetRetryPolicy().GetMinimumBackoff().AsDuration() != 500*time.Millisecond {
		t.Fatalf("subscription does not match the config: %v", sub)
	}
	// Re-running is a no-op.
	again, err := admin.Bootstrap(ctx, client, project, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range again {
		if a.Did != "exists" {
			t.Fatalf("second run changed %+v", a)
		}
	}
	// Someone changed the ack deadline by hand: the next bootstrap puts it back.
	sub.AckDeadlineSeconds = 99
	if _, err := client.SubscriptionAdminClient.UpdateSubscription(ctx, &pubsubpb.UpdateSubscriptionRequest{
		Subscription: &pubsubpb.Subscription{Name: sub.Name, AckDeadlineSeconds: 99, MessageRetentionDuration: durationpb.New(crit.MessageRetention)},
		UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"ack_deadline_seconds"}},
	}); err != nil {
		t.Fatal(err)
	}
	fixed, err := admin.Bootstrap(ctx, client, project, cfg)
	if err != nil {
		t.Fatal(err)
	}
	updated := 0
	for _, a := range fixed {
		if a.Did == "updated" {
			updated++
		}
	}
	sub, _ = client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: sub.Name})
	if updated != 1 || sub.AckDeadlineSeconds != 30 {
		t.Fatalf("drift not corrected: %d updated, ack deadline %d", updated, sub.AckDeadlineSeconds)
	}
}

func TestBootstrapNeedsProject(t *testing.T) {
	if _, err := admin.Bootstrap(context.Background(), nil, "", &queue.Config{}); err == nil {
		t.Fatal("want an error")
	}
}
