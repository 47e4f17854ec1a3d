using QLoraNet.Cli;
using QLoraNet.Distributed;

// Before the console is touched: .NET decides at its first console or signal use whether it handles SIGINT.
LauncherChild.AcceptForwardedInterrupts();

LibTorchProbe.AnnounceTo = Console.Error;
return CliApp.Run(args);
