using QLoraNet.Cli;

LibTorchProbe.AnnounceTo = Console.Error;
return CliApp.Run(args);
