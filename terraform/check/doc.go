// Package check verifies terraform/ offline, without providers or GCP.
//
// Build evaluates a root module and its local module calls with hashicorp/hcl: variables (types,
// defaults, validations), locals, count/for_each, dynamic blocks, preconditions and the Terraform
// functions the configuration uses, including yamldecode(file(...)) of queues.yaml. Computed attributes
// the configuration reads (ids, service account emails, the Cloud SQL connection name) get the values
// the provider would report. The result is a Plan: every resource instance with its arguments.
//
// The checks compare a Plan with the queue config as pkg/queue reads it and return every finding as an
// error, so tests can assert on each:
//
//   - CheckQueues: per queue, the topic, the worker subscription (ack deadline, retention, exactly-once,
//     retry policy, dead-letter policy and max delivery attempts), the dead-letter topic and its
//     inspection subscription; nothing that no queue names.
//   - CheckIAM: least privilege per service account and for the Pub/Sub service agent, and every grant
//     the system needs.
//   - CheckRuntime: Cloud Run (CPU always allocated, min instances, env, secrets) and Cloud SQL (Postgres
//     15, IAM authentication, private IP, IAM database users, no passwords).
//   - CheckOutputs: the outputs the binaries and operators read.
//
// terraform/check.sh runs these tests (and tofu fmt); see terraform/README.md.
package check
