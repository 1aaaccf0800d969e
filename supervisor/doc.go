// Package supervisor is hato's supervision: the root supervisor actor, its
// restart [Policy] and [Backoff], and the lifecycle protocol it speaks with
// its children.
//
// # Restarts
//
// Proto.Actor's built-in strategies stop a child silently once it exceeds
// its restart budget, and its exponential backoff is linear and uncapped.
// The root supervisor here is its children's strategy instead: a crashed
// child restarts after Backoff.Delay(n) (capped, jittered), where n counts
// failures since the child last ran quietly for Policy.ResetAfter; a child
// stopped from outside is spawned again; a child that exceeds
// Policy.MaxRestarts within Policy.Window, or reports a permanent
// [ChildFailed], is stopped and reported as [EventGaveUp]. Every [Event]
// goes to the log and to Config.OnEvent.
//
// # Protocol
//
// Children report [ChildReady] and [ChildFailed] to their parent and honour
// [Drain]. The root answers [AwaitReady] and [DrainChildren].
//
// Package hato exports [Backoff], [Policy], [EventKind] (and its values)
// and [Event] as hato.Backoff, hato.RestartPolicy, hato.EventKind and
// hato.SupervisorEvent (aliases): they change only as hato's API does.
package supervisor
