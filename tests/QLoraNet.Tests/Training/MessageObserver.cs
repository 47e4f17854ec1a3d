using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Training;

/// <summary>A training observer that keeps the run's messages (warnings, resume notes, task scores) and ignores the rest.</summary>
sealed class MessageObserver(List<string>? messages = null) : ITrainingObserver
{
    public List<string> Messages { get; } = messages ?? [];
    public void OnStart(RunSummary summary) { }
    public void OnStep(StepMetrics metrics) { }
    public void OnEvaluation(int step, double validationLoss, bool isBest) { }
    public void OnCheckpoint(int step, string directory) { }
    public void OnMessage(string message) => Messages.Add(message);
}
